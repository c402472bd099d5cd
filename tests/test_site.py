"""The course website (tools/site.py): built from the committed notebooks, then checked file by file and in a browser.

The browser check (tests/site_check.js) needs node, Chromium (LORANB_CHROMIUM, else /usr/bin/chromium or `chromium` on
PATH) and the npm package playwright-core (in LORANB_NODE_MODULES, default ~/.cache/loranb-site-check/node_modules);
ci/site.sh installs all three. Without them the browser check is skipped, unless LORANB_SITE_CHECK=1 (CI), where their
absence fails. The site is built into a temporary folder, or into LORANB_SITE_OUT when set (ci/site.sh: _site)."""
import ast, http.server, json, os, re, shutil, subprocess, sys, threading
from functools import partial
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/'nbs'
NODE_MODULES = Path(os.environ.get('LORANB_NODE_MODULES') or Path.home()/'.cache'/'loranb-site-check'/'node_modules')
HIDDEN = {'hide', 'exporti', 'default_exp'}


def documentation_url():
    text = (ROOT/'pyproject.toml').read_text()
    return re.search(r'^Documentation\s*=\s*"([^"]+)"', text, re.M).group(1).rstrip('/') + '/'


def notebooks():
    "(notebook, page) in course order: index, the main path, Inside the engine"
    main = sorted(p for p in NBS.glob('[0-9]*.ipynb') if not p.name.startswith(('_', '.')))
    engine = sorted(p for p in (NBS/'engine').glob('*.ipynb') if not p.name.startswith(('_', '.')))
    return [(nb, nb.relative_to(NBS).with_suffix('.html').as_posix()) for nb in [NBS/'index.ipynb', *main, *engine]]


def cells(nb):
    return json.loads(nb.read_text(encoding='utf-8'))['cells']


def source(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']


def directives(cell):
    "The cell's leading `#| name: value` lines, as {name: value}"
    d = {}
    for line in source(cell).splitlines():
        if not line.strip(): continue
        m = re.match(r'\s*#\s*\|\s*([^\s:]+)\s*:?\s*(.*?)\s*$', line)
        if not m: break
        d[m.group(1)] = m.group(2)
    return d


def shown_pngs(nb):
    "image/png outputs of the notebook, less those of cells the site hides (nbdev: hide, exporti, default_exp, ...)"
    n = 0
    for c in cells(nb):
        d = directives(c) if c['cell_type'] == 'code' else {}
        if HIDDEN & d.keys() or d.get('include') == 'false' or d.get('output') == 'false': continue
        n += sum('image/png' in o.get('data', {}) for o in c.get('outputs', []))
    return n


def title(nb):
    md = next((source(c) for c in cells(nb) if c['cell_type'] == 'markdown' and source(c).lstrip().startswith('# ')), '')
    return md.strip().splitlines()[0][2:].strip() if md else nb.stem


def search_word(text):
    "The longest word of a title, to type into the search box"
    words = sorted(re.findall(r"[A-Za-z][A-Za-z-]{3,}", text), key=len, reverse=True)
    return words[0].lower() if words else None


def nbdev_alias(page):
    folder, name = os.path.split(page)
    return os.path.join(folder, re.sub(r'^\d+[a-zA-Z0-9]*_', '', name.lower()))


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "(site folder, the generator's printout)"
    out = Path(os.environ.get('LORANB_SITE_OUT') or tmp_path_factory.mktemp('site')/'_site').resolve()
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'site.py'), '--out', str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    print(r.stdout)
    return out, r.stdout


def test_every_notebook_has_a_page_in_course_order(site):
    out, _ = site
    order = [page for _, page in notebooks()]
    for nb, page in notebooks():
        assert (out/page).is_file(), f'{nb} has no page {page}'
        text = (out/page).read_text(encoding='utf-8')
        rel = nb.relative_to(ROOT).as_posix()
        assert f'colab.research.google.com/github/' in text and f'/blob/main/{rel}"' in text, f'{page}: no Colab badge'
        nav = re.search(r'<nav class="sidebar".*?</nav>', text, re.S).group(0)
        links = re.findall(r'<li><a href="([^"]+)"', nav)
        assert [os.path.normpath(os.path.join(os.path.dirname(page), l)) for l in links] == order, f'{page}: sidebar order'


def test_no_resource_from_outside_the_site(site):
    out, _ = site
    external = re.compile(r'''(?:\bsrc|\bsrcset)\s*=\s*["']?(?:https?:)?//|<link\b[^>]*\bhref=["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import''')
    for f in [*out.rglob('*.html'), *out.rglob('*.css'), *out.rglob('*.js')]:
        m = external.search(f.read_text(encoding='utf-8'))
        assert not m, f'{f.relative_to(out)} loads something from outside the site: {m.group(0)}'


def doc_links():
    "(where, url) for each link to the documentation site in loranb/*.py module docstrings and in README.md"
    doc, found = documentation_url(), []
    for py in sorted((ROOT/'loranb').glob('*.py')):
        text = ast.get_docstring(ast.parse(py.read_text(encoding='utf-8'))) or ''
        found += [(f'loranb/{py.name}', u) for u in re.findall(r'https?://[^\s)\]>"\'`]+', text)]
    found += [('README.md', u) for u in re.findall(r'https?://[^\s)\]>"\'`]+', (ROOT/'README.md').read_text(encoding='utf-8'))]
    return [(w, u.rstrip('.,;')) for w, u in found if u.startswith(doc)]


def test_doc_links_point_at_built_files(site):
    "Every `Docs:` link nbdev-export writes into a module docstring, and every README link to the site, has its file"
    out, _ = site
    doc = documentation_url()
    links = doc_links()
    assert any(w.startswith('loranb/') for w, _ in links), 'no module docstring links to the site: is Documentation set?'
    missing = [f'{w}: {u}' for w, u in links if not (out/(u[len(doc):].split('#')[0] or 'index.html')).is_file()]
    assert not missing, 'links to pages the site does not have:\n' + '\n'.join(missing)


def test_nbdev_style_aliases(site):
    "nbdev's names (`lora.html.md`, `lora.html`): the page as markdown, and a redirect to the page (`04_lora.html`)"
    out, _ = site
    for nb, page in notebooks():
        alias = nbdev_alias(page)
        md = (out/(alias + '.md')).read_text(encoding='utf-8')
        assert md.startswith(f'# {title(nb)}\n'), f'{alias}.md does not start with the title of {nb.name}'
        if alias == page: continue
        refresh = re.search(r'http-equiv="refresh" content="0; url=([^"]+)"', (out/alias).read_text(encoding='utf-8'))
        assert refresh and os.path.normpath(os.path.join(os.path.dirname(alias), refresh.group(1))) == page, alias


def test_links_into_the_repository_exist(site):
    "GitHub and Colab links in the notebooks that point into this repository name files that exist"
    _, printout = site
    m = re.search(r'note: \d+ links to files not in the repository:\n((?:  .*\n?)+)', printout)
    assert not m, 'broken links to this repository (fix them in the notebooks):\n' + (m.group(1) if m else '')


def browser_tools():
    "(node, chromium) when the browser check can run, else the reason it cannot"
    node = shutil.which('node')
    chromium = os.environ.get('LORANB_CHROMIUM') or next(
        (c for c in ('/usr/bin/chromium', shutil.which('chromium'), shutil.which('chromium-browser')) if c and os.path.exists(c)), None)
    missing = [what for what, ok in (('node', node), ('Chromium (apt-get install chromium)', chromium),
               (f'playwright-core in {NODE_MODULES} (npm install playwright-core)', (NODE_MODULES/'playwright-core').is_dir())) if not ok]
    return (node, chromium) if not missing else ', '.join(missing)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


def check_spec(out, base, chromium):
    pages = notebooks()
    spec_pages = []
    for i, (nb, page) in enumerate(pages):
        spec_pages.append(dict(out=page, title=title(nb), images=shown_pngs(nb), word=search_word(title(nb)) if i else None,
                               prev=pages[i - 1][1] if i else None, next=pages[i + 1][1] if i + 1 < len(pages) else None))
    return dict(base=base, chromium=chromium, screenshots=str(out/'screenshots'), pages=spec_pages)


def test_site_in_a_browser(site, tmp_path):
    out, _ = site
    tools = browser_tools()
    if isinstance(tools, str):
        if os.environ.get('LORANB_SITE_CHECK') == '1': pytest.fail(f'LORANB_SITE_CHECK=1 but missing: {tools}')
        pytest.skip(f'browser check skipped, missing: {tools} (ci/site.sh installs them)')
    node, chromium = tools
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), partial(_QuietHandler, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = check_spec(out, f'http://127.0.0.1:{server.server_address[1]}/', chromium)
        (tmp_path/'spec.json').write_text(json.dumps(spec, indent=1))
        env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
        r = subprocess.run([node, str(ROOT/'tests'/'site_check.js'), str(tmp_path/'spec.json')], env=env,
                           capture_output=True, text=True, timeout=900)
    finally:
        server.shutdown()
    print(r.stdout, r.stderr)
    at = r.stdout.find('failures:')
    failures = r.stdout[r.stdout.rfind('\n', 0, at) + 1:] if at >= 0 else r.stdout[-3000:]
    assert r.returncode == 0, f'the browser check fails (exit {r.returncode}):\n{failures[:6000]}\n{r.stderr[-3000:]}'
    for shot in ('index.png', '04_lora.png'): assert (out/'screenshots'/shot).is_file(), f'no screenshot {shot}'
