"""Write README.md from nbs/index.ipynb (nbdev's own `nbdev-readme` needs Quarto; this needs only nbconvert).

`python tools/readme.py` writes it; `--check` fails if README.md differs from what the notebook gives."""
import sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

root = Path(__file__).resolve().parent.parent

def render():
    nb = nbformat.read(root/'nbs'/'index.ipynb', as_version=4)
    # nbdev directives, hidden cells and cells shown by their output alone (echo: false) stay out of the README
    nb.cells = [c for c in nb.cells if not c.source.lstrip().startswith(('#| hide', '#|hide', '#| default_exp', '#| echo: false'))]
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs = []
    body, _ = MarkdownExporter(exclude_output=True).from_notebook_node(nb)
    return "<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->\n\n" + body.strip() + "\n"

if __name__ == '__main__':
    text = render()
    if '--check' in sys.argv:
        if (root/'README.md').read_text() != text:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `python tools/readme.py` and commit it")
        print("README.md matches nbs/index.ipynb")
    else:
        (root/'README.md').write_text(text); print("wrote README.md")
