"""Give every lesson its 'Open in Colab' badge and a guarded install cell, right after its title.

The badge's link is built from `[project.urls] Repository` in pyproject.toml and the notebook's own path, so a renamed
lesson gets a badge that names it. The install cell does nothing outside Colab; on Colab it installs loranb onto Colab's
own packages, pinning the torch that is there so that pip can never replace it. Running this again updates both cells in
place (they are found by their cell ids).

usage: python tools/colab_cells.py          write the cells into every lesson
       python tools/colab_cells.py --check  exit 1, naming the lessons, if any lesson's cells differ from what it would write"""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
BADGE_ID, INSTALL_ID = 'colab-badge', 'colab-install'
INSTALL = '''# On Colab: install loranb onto Colab's own packages (its torch pinned, so nothing is replaced); elsewhere: nothing
import sys, subprocess
IN_COLAB = 'google.colab' in sys.modules
if IN_COLAB:
    import torch
    open('/tmp/keep-torch.txt', 'w').write(f'torch=={torch.__version__}\\n')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '-c', '/tmp/keep-torch.txt', 'loranb @ git+{repo}'], check=True)'''

def repository():
    "The repository URL of pyproject.toml, e.g. https://github.com/loranb/loranb."
    return re.search(r'^Repository\s*=\s*"([^"]+)"', (root/'pyproject.toml').read_text(), re.M).group(1).rstrip('/')

def badge_url(nb_path):
    "The Colab link that opens `nb_path` (a path relative to the repository) from the repository's main branch."
    owner_repo = repository().split('github.com/')[1]
    return f'https://colab.research.google.com/github/{owner_repo}/blob/main/{nb_path}'

def lessons():
    "Every lesson: the main path and Inside the engine (not the landing page, nor the Colab lesson, which has its own)."
    nbs = sorted((root/'nbs').glob('[0-9]*.ipynb')) + sorted((root/'nbs'/'engine').glob('*.ipynb'))
    return [p for p in nbs if 'colab' not in p.name]

def wanted_cells(path):
    "The badge (markdown) and install (code) cells for the notebook at `path`."
    rel = path.relative_to(root).as_posix()
    badge = f'[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({badge_url(rel)})'
    return (dict(cell_type='markdown', id=BADGE_ID, metadata={}, source=[badge]),
            dict(cell_type='code', id=INSTALL_ID, metadata={}, execution_count=None, outputs=[],
                 source=INSTALL.replace('{repo}', repository()).splitlines(keepends=True)))

def with_cells(nb, path):
    "The notebook's cells with the badge and install cells right after the title, replacing older copies."
    cells = [c for c in nb['cells'] if c.get('id') not in (BADGE_ID, INSTALL_ID)]
    title = next(i for i, c in enumerate(cells) if c['cell_type'] == 'markdown' and ''.join(c['source']).lstrip().startswith('# '))
    return cells[:title + 1] + list(wanted_cells(path)) + cells[title + 1:]

def differs(nb, path):
    "True if the notebook's badge and install cells are not those `with_cells` writes, in that place."
    strip = lambda cells: [(c.get('id'), ''.join(c['source'])) for c in cells]
    return strip(nb['cells']) != strip(with_cells(nb, path))

if __name__ == '__main__':
    stale = []
    for path in lessons():
        nb = json.loads(path.read_text())
        if not differs(nb, path): continue
        if '--check' in sys.argv: stale.append(path.relative_to(root).as_posix()); continue
        nb['cells'] = with_cells(nb, path)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
        print('wrote the Colab cells of', path.relative_to(root))
    if stale: sys.exit('lessons without their current Colab badge and install cell: ' + ', '.join(stale) + ' (run python tools/colab_cells.py)')
