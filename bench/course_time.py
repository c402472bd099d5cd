"""How long the course takes: every lesson executed top to bottom in a plain Jupyter kernel, as "Run all" does, timed
per lesson and per cell.

    python bench/course_time.py                          # every lesson: a table of seconds per lesson and the slowest cells
    python bench/course_time.py nbs/06_train.ipynb       # some of them
    python bench/course_time.py --save                   # and keep the outputs in the notebooks (as tools/execute.sh does)
    python bench/course_time.py --readme                 # and write the table into bench/README.md (machine and date included)

Offline and on the CPU, as the tests run. Results accumulate in bench/course_time.json (one entry per lesson, the newest
measurement), so lessons can be timed one at a time and the table shows them all, each with its own date. Run lessons one
at a time on an otherwise idle machine: two kernels on two cores slow each other several times over.
"""
import argparse, json, os, platform, subprocess, sys, time
from datetime import date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'bench'/'course_time.json'
START, END = '<!-- course-time:start -->', '<!-- course-time:end -->'
ENV = dict(HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', TOKENIZERS_PARALLELISM='false',
           MPLBACKEND='module://matplotlib_inline.backend_inline')


def machine():
    "The CPU's model name and core count."
    model = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name')),
                 platform.processor() or platform.machine()) if Path('/proc/cpuinfo').exists() else platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def _seconds(cell):
    "A cell's execution time from the timestamps nbclient records."
    t = cell.get('metadata', {}).get('execution', {})
    a, b = t.get('iopub.execute_input'), t.get('shell.execute_reply')
    if not (a and b): return 0.0
    parse = lambda s: datetime.fromisoformat(s.replace('Z', '+00:00'))
    return (parse(b) - parse(a)).total_seconds()


def run_lesson(path, save=False, timeout=3600):
    "Execute the notebook at `path` in a fresh kernel; its wall time and per-cell times (and, with `save`, its outputs kept)."
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop('widgets', None)   # widget state of an earlier run describes widgets this run will not make
    os.environ.update(ENV)
    os.environ.setdefault('LORANB_CACHE', str(Path.home()/'.cache'/'loranb'))
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name='python3', record_timing=True,
                   resources={'metadata': {'path': str(Path(path).parent)}}).execute()
    wall = time.perf_counter() - t0
    label = lambda src: next((l.strip()[:70] for l in src.splitlines() if l.strip() and not l.startswith('#|')), '')   # its first line of code
    cells = [(_seconds(c), label(c.source)) for c in nb.cells if c.cell_type == 'code']
    if save:
        nbformat.write(nb, path)
        subprocess.run(['nbdev-clean', '--fname', str(path)], check=True)   # execution counts and metadata go; outputs stay
    return dict(seconds=round(wall, 1), date=str(date.today()), machine=machine(),
                slowest=[dict(seconds=round(s, 1), cell=src) for s, src in sorted(cells, reverse=True)[:3]])


def table(results):
    "The Markdown table of `results` (lesson -> measurement), in course order, with the total."
    rows = sorted(results.items())
    total = sum(r['seconds'] for _, r in rows)
    lines = ['| lesson | seconds | slowest cells (seconds) | measured |', '|---|---:|---|---|']
    for name, r in rows:
        slow = '; '.join(f"`{s['cell']}` ({s['seconds']:.0f})" for s in r['slowest'] if s['seconds'] >= 1)
        lines.append(f"| {name} | {r['seconds']:.0f} | {slow} | {r['date']}, {r['machine']} |")
    lines.append(f"| **all {len(rows)}** | **{total:.0f}** ({total / 60:.1f} min) | | |")
    return '\n'.join(lines)


def write_readme(results):
    "Put the table between the course-time markers of bench/README.md (added at the end the first time)."
    readme = ROOT/'bench'/'README.md'
    text = readme.read_text()
    block = f"{START}\n{table(results)}\n{END}"
    if START in text: text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else: text = text.rstrip('\n') + '\n\n### The course, lesson by lesson\n\n`python bench/course_time.py --readme`: every lesson in a plain kernel, one at a time.\n\n' + block + '\n'
    readme.write_text(text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('lessons', nargs='*', help='notebooks to run (default: every lesson, the engine and the index)')
    p.add_argument('--save', action='store_true', help='keep the outputs in the notebooks')
    p.add_argument('--readme', action='store_true', help='write the table into bench/README.md')
    a = p.parse_args(argv)
    nbs = ROOT/'nbs'
    lessons = [Path(l) for l in a.lessons] or sorted(nbs.glob('[0-9]*.ipynb')) + sorted((nbs/'engine').glob('[0-9]*.ipynb')) + [nbs/'index.ipynb']
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for lesson in lessons:
        name = Path(lesson).resolve().relative_to(nbs).as_posix()
        try: results[name] = run_lesson(lesson, a.save)
        except Exception as e:
            print(f"FAILED: {name}: {type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}", file=sys.stderr); sys.exit(1)
        print(f"{name:32} {results[name]['seconds']:7.0f} s", flush=True)
        RESULTS.write_text(json.dumps(results, indent=1) + '\n')
    print(table(results))
    if a.readme: write_readme(results)


if __name__ == '__main__': main()
