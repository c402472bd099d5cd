"""Every lesson opens in Colab: a badge that names its own file, and an install cell that only acts on Colab."""
import json, re, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT/'nbs').glob('[0-9]*.ipynb')) + sorted((ROOT/'nbs'/'engine').glob('*.ipynb'))
BADGE = re.compile(r'\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]'
                   r'\(https://colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/main/([^)]+)\)')

def cells(path): return [dict(c, text=''.join(c['source'])) for c in json.loads(path.read_text())['cells']]

def repository():
    return re.search(r'^Repository\s*=\s*"https://github\.com/([^"]+?)/?"', (ROOT/'pyproject.toml').read_text(), re.M).group(1)

def first_loranb_import(cs):
    return next(i for i, c in enumerate(cs) if c['cell_type'] == 'code' and re.search(r'^\s*(from|import) loranb', c['text'], re.M))

@pytest.mark.parametrize('path', LESSONS, ids=lambda p: p.relative_to(ROOT/'nbs').as_posix())
def test_badge_names_the_lesson_itself(path):
    cs = cells(path)
    found = [BADGE.search(c['text']) for c in cs[:6] if c['cell_type'] == 'markdown']
    found = [m for m in found if m]
    assert found, f"{path.name}: no Colab badge among its first cells"
    repo, target = found[0].groups()
    assert repo == repository()
    assert target == path.relative_to(ROOT).as_posix(), f"{path.name}'s badge opens {target}"
    assert (ROOT/target).exists()

@pytest.mark.parametrize('path', LESSONS, ids=lambda p: p.relative_to(ROOT/'nbs').as_posix())
def test_guarded_install_before_loranb_is_imported(path):
    cs = cells(path)
    install = [i for i, c in enumerate(cs) if c['cell_type'] == 'code' and 'pip' in c['text'] and 'install' in c['text']]
    assert install, f"{path.name}: no install cell"
    i = install[0]
    assert re.search(r"IN_COLAB = 'google\.colab' in sys\.modules\nif IN_COLAB:\n", cs[i]['text']), "the install is not guarded"
    assert all(l.startswith((' ', '\t')) for l in cs[i]['text'].split('if IN_COLAB:\n', 1)[1].splitlines()), "work outside the guard"
    assert i < first_loranb_import(cs), f"{path.name}: loranb is imported before the install cell"
    assert cs[i].get('outputs', []) == [], f"{path.name}: the install cell did something outside Colab"

@pytest.mark.parametrize('path', LESSONS, ids=lambda p: p.relative_to(ROOT/'nbs').as_posix())
def test_no_magic_installs(path):
    bad = [c['text'].splitlines()[0] for c in cells(path) if c['cell_type'] == 'code' and re.search(r'^\s*[%!]\s*pip', c['text'], re.M)]
    assert not bad, f"{path.name}: %pip/!pip in {bad}"

def test_cells_are_current():
    "The badge and install cells are exactly what tools/colab_cells.py writes (so they follow pyproject's repository)."
    done = subprocess.run([sys.executable, str(ROOT/'tools'/'colab_cells.py'), '--check'], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
