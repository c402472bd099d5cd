"""Build the course website from the committed, executed notebooks: no kernel, no Quarto, no network, no CDN.

    python tools/site.py [--out _site]

1. Pages. `nbs/index.ipynb` is the landing page (`index.html`); the main path is `nbs/[0-9]*.ipynb`, then "Inside the
   engine" is `nbs/engine/*.ipynb`, each in filename order (nbdev's rule: names starting with `_` or `.` are skipped).
   `nbs/04_lora.ipynb` becomes `04_lora.html`, `nbs/engine/21_config.ipynb` becomes `engine/21_config.html`. A
   notebook's first `# Title` / `> description` cell is its page header.
2. Cells, as nbdev's doc processors (`nbdev.processors`) and Quarto show them, with one choice of ours: `#| export`
   code is shown (nbdev shows only its `show_doc`; in a course the code is the lesson). Hidden entirely, outputs too:
   `#| hide`, `#| exporti`, `#| default_exp`, `#| include: false`. `#| echo: false` hides the code and keeps the
   output, `#| output: false` the reverse; `show_doc(...)` cells show only their output; `#| hide_line` and
   `#| filter_stream` lines go; housekeeping magics (`%load_ext`...) go; a markdown heading ending in ` -` goes. Cells
   flagged with one of `[tool.nbdev] tst_flags` (`slow`, `hub`, `gpu`...) or `#| eval: false` are shown with their
   stored output and a small label.
3. Outputs: stream text (ANSI codes and `\\r` progress redraws cleaned), errors, `text/plain`, `text/html`,
   `text/markdown`, and images, written once each under `img/` (named by content hash). A widget output shows the final
   text of its progress bar from the notebook's saved widget state, or its `text/plain`, or (an interactive widget,
   whose picture the lessons store just after it) a one-line note.
4. Prose: nbconvert's markdown reader (mistune) with anchored headings, links to notebooks pointed at their pages (or at
   GitHub), `names` in backticks linked to their lesson, module or API entry (nbdev's `add_links`), external images
   replaced (the Colab badge by a local copy), and TeX math written as MathML, which browsers draw natively (formulas
   outside the small TeX subset of `TexToMathML` stay as TeX text).
5. API: after each `#| export` cell, one entry per public function or class it defines (nbdev's `add_show_docs`
   rule): signature, docstring, and the parameters' comments (nbdev's docments), read with `ast` from the cell, which
   is exactly what `nbdev-export` copies into `loranb/<module>.py`; nothing is imported or executed.
6. Site: a sidebar in course order, previous/next links, an "Open in Colab" badge and a link to the notebook on GitHub
   (`[project.urls] Repository`), a search box (site.js over search.js, a JSON index of titles, headings and prose),
   responsive CSS (style.css). Finally nbdev-style aliases, so that the `Docs:` links nbdev-export writes into module
   docstrings (`<Documentation URL>/lora.html.md`) resolve: `lora.html.md` (the page as markdown) and `lora.html` (a
   redirect to `04_lora.html`).

Needs only what `.[dev]` installs: nbconvert (with mistune 3 and pygments); pillow, if present, gives image sizes."""
import argparse, ast, base64, collections, hashlib, html, io, json, posixpath, re, shutil, sys, time, tokenize
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATS = collections.defaultdict(list)          # build notes: TeX left as text, broken repository links, ...
WIDGET = 'application/vnd.jupyter.widget-view+json'
IMAGE_MIMES = {'image/png': 'png', 'image/jpeg': 'jpg', 'image/gif': 'gif', 'image/svg+xml': 'svg'}
HIDDEN = {'hide', 'exporti', 'default_exp'}    # nbdev's `rm_export`/`hide_`: these cells go, outputs and all
STRIP_MAGICS = re.compile(r'^\s*(%load_ext|%autoreload|%reload_ext|%matplotlib|%config)\b.*\n?', re.M)
ANSI = re.compile(r'\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])')
WIDGET_REPR = re.compile(r'^\s*\w+\((children|value|description)=')
EXTERNAL = re.compile(r'^[a-z][a-z0-9+.-]*:', re.I)


# ---------------------------------------------------------------------------------------------------------------------
# Project settings and the pages

def pyproject_table(name, root=ROOT):
    "`key = \"value\"` pairs of one table of pyproject.toml (a small reader: tomllib needs Python 3.11)"
    text = (root/'pyproject.toml').read_text()
    m = re.search(rf'^\[{re.escape(name)}\][ \t]*$(.*?)(?=^\[|\Z)', text, re.M | re.S)
    return dict(re.findall(r'^\s*"?([\w.-]+)"?\s*=\s*"([^"]*)"', m.group(1), re.M)) if m else {}


@dataclass
class Config:
    lib: str            # the package, 'loranb'
    repo_url: str       # https://github.com/<owner>/<repo>
    doc_url: str        # https://<owner>.github.io/<repo>/
    flags: tuple        # nbdev's tst_flags: cells flagged with these are labelled
    branch: str = 'main'

    @classmethod
    def read(cls, root=ROOT):
        urls, nbdev = pyproject_table('project.urls', root), pyproject_table('tool.nbdev', root)
        lib = pyproject_table('project', root).get('name', root.name)
        flags = tuple(f for f in nbdev.get('tst_flags', '').split() if f != 'notest')
        return cls(lib, urls.get('Repository', '').rstrip('/'), urls.get('Documentation', '').rstrip('/') + '/', flags)

    def blob(self, path): return f'{self.repo_url}/blob/{self.branch}/{path}'

    def colab(self, path):
        owner_repo = re.sub(r'^https?://github\.com/', '', self.repo_url)
        return f'https://colab.research.google.com/github/{owner_repo}/blob/{self.branch}/{path}'


@dataclass
class Page:
    src: Path           # the notebook
    rel: str            # the notebook's path in the repository: 'nbs/04_lora.ipynb'
    out: str            # the page's path in the site: '04_lora.html'
    part: str           # 'home', 'main' or 'engine'
    title: str = ''
    desc: str = ''
    cells: list = field(default_factory=list)
    widgets: dict = field(default_factory=dict)

    @property
    def num(self): return re.match(r'\d*', self.src.stem).group()

    @property
    def label(self): return f'{self.num} {self.title}'.strip() if self.part != 'home' else 'Home'


def _nb_files(folder):
    return sorted(p for p in folder.glob('*.ipynb') if not p.name.startswith(('_', '.')))


def discover(root=ROOT):
    "The pages in course order: the landing page, the main path, then Inside the engine"
    nbs = root/'nbs'
    found = [(nbs/'index.ipynb', 'home')] if (nbs/'index.ipynb').exists() else []
    found += [(p, 'main') for p in _nb_files(nbs) if re.match(r'\d', p.name)]
    found += [(p, 'engine') for p in _nb_files(nbs/'engine')] if (nbs/'engine').is_dir() else []
    pages = []
    for src, part in found:
        out = src.relative_to(nbs).with_suffix('.html').as_posix()
        page = Page(src, src.relative_to(root).as_posix(), out, part)
        load_notebook(page)
        pages.append(page)
    return pages


def load_notebook(page):
    "Read the notebook: cells, saved widget state, and the title and description from its first `# Title` cell"
    nb = json.loads(page.src.read_text(encoding='utf-8'))
    page.widgets = nb.get('metadata', {}).get('widgets', {}).get('application/vnd.jupyter.widget-state+json', {})
    page.widgets = page.widgets.get('state', {})
    # the notebook's own Colab badge cell (tools/colab_cells.py) is left out: every page carries the badge in its header
    page.cells = [dict(c, source=_text(c.get('source', ''))) for c in nb.get('cells', []) if c.get('id') != 'colab-badge']
    for c in page.cells:
        if c['cell_type'] == 'markdown' and c['source'].lstrip().startswith('# '):
            lines = c['source'].strip().splitlines()
            page.title = lines[0][2:].strip()
            desc = [l[1:].strip() for l in lines[1:] if l.startswith('>')]
            page.desc = ' '.join(desc)
            rest = [l for l in lines[1:] if not l.startswith('>')]
            c['source'] = '\n'.join(rest).strip()
            break
    page.title = page.title or page.src.stem


def _text(x): return ''.join(x) if isinstance(x, list) else (x or '')


# ---------------------------------------------------------------------------------------------------------------------
# nbdev's cell directives

_DIRECTIVE = re.compile(r'^\s*#\s*\|\s*([^\s:]+)\s*:?\s?(.*?)\s*$')
_LEADING = re.compile(r'^\s*(#\s*\||%%\w+|$)')


def split_directives(cell):
    """({name: value}, code): the cell's leading `#| name: value` lines (a bare directive's value is ''), plus those in
    its metadata's `nbdev` dict, and its code without them; as fastcore.nbio's NbCell.directives reads them"""
    lines = cell['source'].splitlines(True)
    n = next((i for i, l in enumerate(lines) if not _LEADING.match(l)), len(lines))
    found = dict(m.groups() for m in map(_DIRECTIVE.match, lines[:n]) if m)
    meta = cell.get('metadata', {}).get('nbdev', {}) or {}
    d = {k: ('' if v == 'true' else v) for k, v in {**meta, **found}.items()}
    code = ''.join([l for l in lines[:n] if l.lstrip().startswith('%%')] + lines[n:])
    return d, code


def cell_view(d, code):
    "(show code, show outputs) of a code cell with directives `d`, as nbdev's processors and Quarto decide"
    if HIDDEN & d.keys() or d.get('include') == 'false': return False, False
    if re.match(r'\s*show_doc\b', code): return False, True        # nbdev's clean_show_doc: echo false
    return d.get('echo') != 'false', d.get('output') != 'false'


def clean_code(code):
    "The shown code: without housekeeping magics (nbdev's clean_magics) and `#| hide_line` lines"
    code = STRIP_MAGICS.sub('', code)
    return '\n'.join(l for l in code.splitlines() if not re.search(r'#\|\s*hide_line\s*$', l)).strip('\n')


def clean_stream(text, words=''):
    "Stream text as it looked: ANSI codes gone, each `\\r` redraw replaced by its last state, `filter_stream` words"
    text = ANSI.sub('', text)
    lines = [next((s for s in reversed(l.split('\r')) if s.strip()), '') for l in text.split('\n')]
    if words: lines = [l for l in lines if not re.search('|'.join(map(re.escape, words.split())), l)]
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# TeX to MathML, for the subset of TeX the lessons write ($...$ and $$...$$). Browsers draw MathML natively, so no
# script and no font is needed. Anything outside the subset raises TexError and the formula stays as TeX text.

class TexError(Exception): pass

GREEK = dict(zip('alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi pi rho sigma tau upsilon phi '
                 'chi psi omega varepsilon vartheta varphi varrho varsigma'.split(), 'αβγδϵζηθικλμνξπρστυϕχψωεϑφϱς'))
GREEK_UP = dict(zip('Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega'.split(), 'ΓΔΘΛΞΠΣΥΦΨΩ'))
SYMBOLS = {'times': '×', 'cdot': '·', 'in': '∈', 'notin': '∉', 'll': '≪', 'gg': '≫', 'le': '≤', 'leq': '≤', 'ge': '≥',
           'geq': '≥', 'ne': '≠', 'neq': '≠', 'approx': '≈', 'sim': '∼', 'simeq': '≃', 'propto': '∝', 'equiv': '≡',
           'leftarrow': '←', 'rightarrow': '→', 'to': '→', 'gets': '←', 'mapsto': '↦', 'Rightarrow': '⇒',
           'odot': '⊙', 'otimes': '⊗', 'oplus': '⊕', 'circ': '∘', 'ast': '∗', 'pm': '±', 'mp': '∓', 'div': '÷',
           'cdots': '⋯', 'ldots': '…', 'dots': '…', 'vdots': '⋮', 'ddots': '⋱', 'lVert': '‖', 'rVert': '‖',
           'Vert': '‖', '|': '‖', 'lvert': '|', 'rvert': '|', 'vert': '|', 'mid': '∣', 'top': '⊤', 'perp': '⊥',
           'infty': '∞', 'partial': '∂', 'nabla': '∇', 'forall': '∀', 'exists': '∃', 'langle': '⟨', 'rangle': '⟩',
           'lbrace': '{', 'rbrace': '}', '{': '{', '}': '}', '%': '%', '#': '#', '&': '&', '_': '_', '$': '$',
           'varnothing': '∅', 'emptyset': '∅', 'setminus': '∖', 'cup': '∪', 'cap': '∩', 'subset': '⊂',
           'subseteq': '⊆', 'int': '∫', 'ell': 'ℓ', 'prime': '′'}
LIMIT_OPS = {'sum': '∑', 'prod': '∏', 'min': 'min', 'max': 'max', 'lim': 'lim', 'argmin': 'arg min',
             'argmax': 'arg max', 'sup': 'sup', 'inf': 'inf'}
FUNCS = {'cos', 'sin', 'tan', 'log', 'ln', 'exp', 'det', 'dim', 'ker', 'tr', 'arg', 'tanh', 'softmax'}
SPACES = {',': '0.1667em', ':': '0.2222em', '>': '0.2222em', ';': '0.2778em', ' ': '0.25em', 'quad': '1em',
          'qquad': '2em', 'enspace': '0.5em', 'thinspace': '0.1667em'}
IGNORED = {'!', 'displaystyle', 'textstyle', 'limits', 'nolimits', 'nonumber'}
SIZED = {'big', 'Big', 'bigg', 'Bigg', 'bigl', 'bigr', 'Bigl', 'Bigr', 'biggl', 'biggr', 'left', 'right'}
ACCENTS = {'bar': '¯', 'hat': '^', 'tilde': '˜', 'vec': '→', 'dot': '˙', 'ddot': '¨', 'overline': '‾',
           'widehat': '^', 'widetilde': '˜'}
TEXT_CMDS = {'text': 'mtext', 'textrm': 'mtext', 'mbox': 'mtext', 'mathrm': 'mi', 'operatorname': 'mi',
             'mathit': 'mi', 'mathbf': 'mi', 'textbf': 'mtext', 'textit': 'mtext'}
MATRIX_DELIMS = {'matrix': ('', ''), 'pmatrix': ('(', ')'), 'bmatrix': ('[', ']'), 'Bmatrix': ('{', '}'),
                 'vmatrix': ('|', '|'), 'Vmatrix': ('‖', '‖'), 'cases': ('{', ''), 'aligned': ('', '')}
MATRIX_STOPS = ('&', '\\\\', '\\end')
_TEX_TOKEN = re.compile(r'\\([a-zA-Z]+|.)|(\d+(?:\.\d+)?)|(\s+)|(.)', re.S)


def _letter(c, kind):
    "A double-struck (`\\mathbb`) or script (`\\mathcal`) letter, as a Unicode mathematical letter"
    holes = {'mathbb': dict(C='ℂ', H='ℍ', N='ℕ', P='ℙ', Q='ℚ', R='ℝ', Z='ℤ'),
             'mathcal': dict(B='ℬ', E='ℰ', F='ℱ', H='ℋ', I='ℐ', L='ℒ', M='ℳ', R='ℛ')}[kind]
    if c in holes: return holes[c]
    if not ('A' <= c <= 'Z'): raise TexError(f'\\{kind}{{{c}}}')
    return chr({'mathbb': 0x1D538, 'mathcal': 0x1D49C}[kind] + ord(c) - ord('A'))


class TexToMathML:
    "A small recursive-descent reader of TeX math that writes MathML Core"
    def __init__(self, tex):
        self.toks = [t for t in self._tokens(tex)]
        self.i = 0

    @staticmethod
    def _tokens(tex):
        for m in _TEX_TOKEN.finditer(tex):
            cmd, num, space, ch = m.groups()
            yield ' ' if space else ('\\' + cmd if cmd is not None else num or ch)

    def peek(self, raw=False):
        while not raw and self.i < len(self.toks) and self.toks[self.i] == ' ': self.i += 1
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self, raw=False):
        t = self.peek(raw)
        if t is None: raise TexError('unexpected end')
        self.i += 1
        return t

    def expect(self, tok):
        if self.next() != tok: raise TexError(f'expected {tok}')

    def convert(self, display=False):
        body = self.expr(stop=())
        if self.peek() is not None: raise TexError(f'unexpected {self.peek()}')
        return f'<math display="block">{body}</math>' if display else f'<math>{body}</math>'

    def expr(self, stop=('}',)):
        out = []
        while (t := self.peek()) is not None and t not in stop: out.append(self.scripts(self.atom()))
        return ''.join(out)

    def group(self):
        "The rest of a {...} group whose `{` was read"
        body = self.expr()
        self.expect('}')
        return '<mn>,</mn>' if body == '<mo>,</mo>' else f'<mrow>{body}</mrow>'

    def arg(self):
        "One argument: a {group}, or a single token (`\\frac12` has the arguments 1 and 2)"
        t = self.peek()
        if t and t[0].isdigit() and len(t) > 1:
            self.toks[self.i] = t[1:]
            return f'<mn>{t[0]}</mn>'
        return self.atom()

    def raw_arg(self):
        "The text of a {group} (spaces kept) or of one token"
        if self.next() != '{': return self.toks[self.i - 1]
        out, depth = [], 1
        while True:
            t = self.next(raw=True)
            depth += (t == '{') - (t == '}')
            if depth == 0: return ''.join(out)
            out.append(t)

    def scripts(self, base):
        sub = sup = None
        while self.peek() in ('_', '^', "'"):
            t = self.next()
            if t == "'": sup = '<mo>′</mo>'
            elif t == '_': sub = self.arg()
            else: sup = self.arg()
        limits = base.startswith('<mo movablelimits')        # sum, min...: limits under and over in display math
        tag = {(1, 1): ('munderover', 'msubsup'), (1, 0): ('munder', 'msub'), (0, 1): ('mover', 'msup')}
        kind = tag.get((sub is not None, sup is not None))
        if kind: return f'<{kind[not limits]}>{base}{sub or ""}{sup or ""}</{kind[not limits]}>'
        return base

    def atom(self):
        t = self.next()
        if t == '{': return self.group()
        if t[0].isdigit(): return f'<mn>{t}</mn>'
        if len(t) == 1 and t.isalpha(): return f'<mi>{t}</mi>'
        if len(t) > 1 and t[0] == '\\': return self.command(t[1:])
        if t in '}&^_': raise TexError(f'unexpected {t}')
        if t == "'": return '<mo>′</mo>'
        return f'<mo>{html.escape("−" if t == "-" else t)}</mo>'

    def command(self, name):
        if name in GREEK: return f'<mi>{GREEK[name]}</mi>'
        if name in GREEK_UP: return f'<mi mathvariant="normal">{GREEK_UP[name]}</mi>'
        if name in SYMBOLS: return f'<mo>{html.escape(SYMBOLS[name])}</mo>'
        if name in LIMIT_OPS: return f'<mo movablelimits="true">{LIMIT_OPS[name]}</mo>'
        if name in FUNCS: return f'<mi>{name}</mi>' if len(name) > 1 else f'<mi mathvariant="normal">{name}</mi>'
        if name in SPACES: return f'<mspace width="{SPACES[name]}"/>'
        if name in IGNORED: return ''
        if name in SIZED: return self.delimiter(stretchy=name in ('left', 'right'))
        if name in ('frac', 'tfrac', 'dfrac'): return f'<mfrac>{self.arg()}{self.arg()}</mfrac>'
        if name == 'sqrt': return self.sqrt()
        if name in ACCENTS: return f'<mover accent="true">{self.arg()}<mo>{ACCENTS[name]}</mo></mover>'
        if name in TEXT_CMDS: return self.text(name)
        if name in ('mathbb', 'mathcal'): return f'<mi>{"".join(_letter(c, name) for c in self.raw_arg())}</mi>'
        if name == 'begin': return self.environment(self.raw_arg())
        raise TexError(f'\\{name}')

    def delimiter(self, stretchy):
        d = self.next()
        d = SYMBOLS.get(d[1:], d) if d.startswith('\\') else d
        if d == '.': return ''
        return f'<mo stretchy="{"true" if stretchy else "false"}">{html.escape(d)}</mo>'

    def sqrt(self):
        if self.peek() != '[': return f'<msqrt>{self.arg()}</msqrt>'
        self.next()
        index = self.expr(stop=(']',))
        self.expect(']')
        return f'<mroot>{self.arg()}<mrow>{index}</mrow></mroot>'

    def text(self, name):
        words = html.escape(self.raw_arg())
        tag = TEXT_CMDS[name]
        style = ' style="font-weight:bold"' if name in ('mathbf', 'textbf') else ''
        if tag == 'mi' and name != 'mathit': return f'<mi mathvariant="normal"{style}>{words}</mi>'
        return f'<{tag}{style}>{words}</{tag}>'

    def environment(self, env):
        if env not in MATRIX_DELIMS: raise TexError(f'\\begin{{{env}}}')
        rows, cells = [], []
        while True:
            cells.append('<mtd>' + self.expr(stop=MATRIX_STOPS) + '</mtd>')
            t = self.next()
            if t == '&': continue
            rows.append(f'<mtr>{"".join(cells)}</mtr>')
            cells = []
            if t == '\\end':
                if self.raw_arg() != env: raise TexError(f'\\end of {env}')
                break
        left, right = MATRIX_DELIMS[env]
        table = f'<mtable>{"".join(rows)}</mtable>'
        fence = lambda d: f'<mo>{html.escape(d)}</mo>' if d else ''
        return f'<mrow>{fence(left)}{table}{fence(right)}</mrow>'


def tex_to_html(tex, display=False):
    "MathML for the TeX `tex`; TeX outside the subset comes back as the TeX itself, in a <code>"
    try: return TexToMathML(tex).convert(display)
    except (TexError, IndexError) as e:
        STATS['tex_fallback'].append(f'{tex} ({e})')
        delim = '$$' if display else '$'
        return f'<code class="tex">{html.escape(delim + tex + delim)}</code>'


# ---------------------------------------------------------------------------------------------------------------------
# Markdown

def slug(text):
    "A heading's anchor: lower case words joined by '-'"
    text = html.unescape(re.sub(r'<[^>]+>', '', text)).lower()
    return re.sub(r'[^\w]+', '-', text).strip('-') or 'section'


def _markdown_class():
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath, MISTUNE_V3
    if not MISTUNE_V3: sys.exit('tools/site.py needs mistune 3 (pip install "mistune>=3")')

    class SiteRenderer(IPythonRenderer):
        "nbconvert's renderer, with anchored headings, MathML, and links pointed at the site's pages"
        def __init__(self, page_render):
            super().__init__(escape=False, exclude_anchor_links=True)
            self.pr = page_render

        def heading(self, text, level, **attrs):
            hid = self.pr.unique_id(slug(text))
            self.pr.headings.append((level, hid, re.sub(r'<[^>]+>', '', text)))
            anchor = f'<a class="anchor" href="#{hid}" aria-label="link to this section">#</a>'
            return f'<h{level} id="{hid}">{text}{anchor}</h{level}>\n'

        def block_math(self, body): return tex_to_html(body.strip(), display=True)

        def inline_math(self, body): return tex_to_html(body.strip())

        def image(self, text, url, title=None): return super().image(text, self.pr.site_url(url), title)

        def link(self, text, url, title=None):
            text = re.sub(r'<a class="sym" href="[^"]*">(.*?)</a>', r'\1', text)   # no link inside a link
            return super().link(text, self.pr.site_url(url), title)

        def codespan(self, text):
            "`name` in backticks links to its lesson, module or API entry, as nbdev's add_links does"
            code, url = super().codespan(text), self.pr.symbol_url(html.unescape(text))
            return f'<a class="sym" href="{url}">{code}</a>' if url else code

    return lambda pr: MarkdownWithMath(renderer=SiteRenderer(pr))


def localize_images(markup, root):
    "No image from outside the site: the Colab badge becomes the local copy, any other external image its alt text"
    def local(m):
        tag, src = m.group(0), m.group(1)
        if src.endswith('colab-badge.svg'):
            return f'<img src="{root}assets/colab-badge.svg" alt="Open In Colab" class="badge">'
        alt = re.search(r'\balt="([^"]*)"', tag)
        return f'<span class="ext-img">[{alt.group(1) if alt else "image"}]</span>'
    return re.sub(r'<img\b[^>]*?\bsrc="((?:https?:)?//[^"]*)"[^>]*>', local, markup)


# ---------------------------------------------------------------------------------------------------------------------
# API entries, read from an exported cell's source like nbdev's show_doc shows them

def _comments(code):
    "{line number: comment text} of the cell's comments"
    try: toks = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError): return {}
    return {t.start[0]: t.string.lstrip('#').strip() for t in toks if t.type == tokenize.COMMENT}


def _seg(code, node):
    "The node's source text as written (`3e-3`, not `0.003`), on one line"
    text = ast.get_source_segment(code, node) or ast.unparse(node)
    return re.sub(r'\s*\n\s*', ' ', text)


def _arguments(args, code, comments, first_line):
    """[(signature text, name, annotation, default, comment)] in order; `/` and `*` markers have no name. A comment
    belongs to a parameter alone on its line (nbdev's docments), the `def` line too when the signature spans lines"""
    plain = args.posonlyargs + args.args
    pairs = list(zip(plain, [None] * (len(plain) - len(args.defaults)) + list(args.defaults)))
    if args.posonlyargs: pairs.insert(len(args.posonlyargs), ('/', None))
    if plain and plain[0].arg in ('self', 'cls'): pairs = pairs[1:]
    pairs += [((args.vararg, '*') if args.vararg else ('*', None))] if args.vararg or args.kwonlyargs else []
    pairs += list(zip(args.kwonlyargs, args.kw_defaults)) + ([(args.kwarg, '**')] if args.kwarg else [])
    real = [a for a, _ in pairs if isinstance(a, ast.arg)]
    per_line = collections.Counter(a.lineno for a in real)
    multi = any(a.lineno != first_line for a in real)
    rows = []
    for a, d in pairs:
        if not isinstance(a, ast.arg): rows.append((a, '', '', '', '')); continue
        stars, d = (d, None) if isinstance(d, str) else ('', d)
        ann, default = _seg(code, a.annotation) if a.annotation else '', _seg(code, d) if d is not None else ''
        comment = comments.get(a.lineno, '') if per_line[a.lineno] == 1 and (multi or a.lineno != first_line) else ''
        text = stars + a.arg + (f':{ann}' if ann else '') + (f'={default}' if default else '')
        rows.append((text, stars + a.arg, ann, default, comment))
    return rows


def _fields(cls, code, comments):
    "The same rows for a dataclass's fields"
    rows = []
    for n in cls.body:
        if not (isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)): continue
        ann, default = _seg(code, n.annotation), _seg(code, n.value) if n.value else ''
        rows.append((f'{n.target.id}:{ann}' + (f'={default}' if default else ''), n.target.id, ann, default,
                     comments.get(n.lineno, '')))
    return rows


def _signature(name, rows, returns=''):
    "`name(a:int=1, *, b=None) -> str`; one parameter a line when there are many (the page folds those)"
    if len(rows) <= 12: return f"{name}({', '.join(r[0] for r in rows)}){returns}"
    return f'{name}(\n' + ''.join(f'    {r[0]},\n' for r in rows) + f'){returns}'


def api_entries(code, module):
    "[{name, kind, sig, doc, params, methods}] for the public functions and classes the cell defines at top level"
    try: tree = ast.parse(code)
    except SyntaxError: return []
    comments, out = _comments(code), []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): continue
        if node.name.startswith('_') and not node.name.startswith('__'): continue
        entry = dict(name=f'{module}.{node.name}', doc=ast.get_docstring(node) or '', methods=[])
        if isinstance(node, ast.ClassDef): entry.update(_class_entry(node, code, comments))
        else: entry.update(kind='def', **_function(node, code, comments))
        out.append(entry)
    return out


def _function(node, code, comments):
    rows = _arguments(node.args, code, comments, node.lineno)
    returns = f' -> {_seg(code, node.returns)}' if node.returns else ''
    return dict(sig=_signature(node.name, rows, returns), params=[r[1:] for r in rows if r[1]])


def _class_entry(node, code, comments):
    init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == '__init__'), None)
    if init: rows = _arguments(init.args, code, comments, init.lineno)
    elif any('dataclass' in ast.unparse(d) for d in node.decorator_list): rows = _fields(node, code, comments)
    else: rows = [(_seg(code, b), '', '', '', '') for b in node.bases]
    methods = [(_function(m, code, {})['sig'], ast.get_docstring(m) or '') for m in node.body
               if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and not m.name.startswith('_')]
    return dict(kind='class', sig=_signature(node.name, rows), params=[r[1:] for r in rows if r[1]], methods=methods)


# ---------------------------------------------------------------------------------------------------------------------
# One page's body

def _esc(s): return html.escape(s, quote=True)


def highlight_python(code):
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer
    return highlight(code, PythonLexer(), HtmlFormatter())


def _image_size(raw):
    try:
        from PIL import Image
        return Image.open(io.BytesIO(raw)).size
    except Exception: return None


class PageRender:
    "Renders one page's cells to HTML; knows the other pages, to point links at them"
    markdown_factory = None

    def __init__(self, site, page):
        self.site, self.page, self.ids, self.headings, self.text = site, page, set(), [], []
        self.root = '../' * page.out.count('/')
        if PageRender.markdown_factory is None: PageRender.markdown_factory = _markdown_class()
        self.md = PageRender.markdown_factory(self)
        self.module = default_exp(page)

    def unique_id(self, base):
        hid, n = base, 1
        while hid in self.ids: n += 1; hid = f'{base}-{n}'
        self.ids.add(hid)
        return hid

    def markdown(self, source):
        return localize_images(self.md(source), self.root)

    def site_url(self, url):
        "A link as written in a notebook, pointed at the site: notebooks at their pages, other repository files at GitHub"
        if url.startswith(self.site.cfg.doc_url): url = self.root + url[len(self.site.cfg.doc_url):]
        if EXTERNAL.match(url): self.site.check_repo_link(self.page, url)
        if EXTERNAL.match(url) or url.startswith(('#', '/')): return url
        path, _, frag = url.partition('#')
        if not path: return url
        target = posixpath.normpath(posixpath.join(posixpath.dirname(self.page.rel), path))
        frag = f'#{frag}' if frag else ''
        page = self.site.by_rel.get(target)
        if page: return self.site.href(self.page, page.out) + frag
        if not target.startswith('..') and (self.site.root/target).exists(): return self.site.cfg.blob(target) + frag
        return url

    def symbol_url(self, name):
        target = self.site.symbols.get(re.sub(r'\(\)$', '', name.strip()))
        if not target: return None
        path, _, frag = target.partition('#')
        return (self.site.href(self.page, path) if path != self.page.out else '') + (f'#{frag}' if frag else '')

    def body(self):
        parts = [self.markdown_cell(c) if c['cell_type'] == 'markdown' else self.code_cell(c)
                 for c in self.page.cells if c['cell_type'] in ('markdown', 'code')]
        return '\n'.join(p for p in parts if p)

    def markdown_cell(self, cell):
        src = cell['source']
        if not src.strip() or re.match(r'#+\s+.*\s+-\s*$', src.strip()): return ''   # nbdev's rm_header_dash
        self.text.append(src)
        return f'<div class="cell md">{self.markdown(src)}</div>'

    def code_cell(self, cell):
        d, code = split_directives(cell)
        show_code, show_out = cell_view(d, code)
        if not (show_code or show_out): return ''
        code = clean_code(code)
        inp = f'<div class="input">{highlight_python(code)}</div>' if show_code and code.strip() else ''
        outs = self.outputs(cell.get('outputs', []), d.get('filter_stream', '')) if show_out else ''
        exported = {'export', 'exports'} & d.keys()
        api = self.api(code, d.get('export') or d.get('exports') or self.module) if exported else ''
        if not (inp or outs): return api
        return f'<div class="cell code">{self.flags(d)}{inp}{outs}</div>{api}'

    def flags(self, d):
        "Labels for cells nbdev-test skips: a `tst_flags` flag (slow, hub, gpu...) or `#| eval: false`"
        why = lambda f: (f'#| {f}: skipped by nbdev-test unless asked for (--flags {f})' if f != 'eval' else
                         '#| eval: false: not run by nbdev-test; the output is the one stored in the notebook')
        names = [f for f in self.site.cfg.flags if f in d] + (['eval'] if d.get('eval') == 'false' else [])
        chips = ''.join(f'<span class="flag" title="{_esc(why(f))}">{"not run" if f == "eval" else f}</span>' for f in names)
        return f'<div class="flags">{chips}</div>' if chips else ''

    def outputs(self, outputs, filter_words):
        html_parts = [self.output(o, filter_words) for o in outputs]
        html_parts = [h for h in html_parts if h]
        return f'<div class="outputs">{"".join(html_parts)}</div>' if html_parts else ''

    def output(self, o, filter_words=''):
        kind = o.get('output_type')
        if kind == 'stream':
            text = clean_stream(_text(o.get('text')), filter_words).strip('\n')
            return f'<pre class="out {_esc(o.get("name", "stdout"))}">{_esc(text)}</pre>' if text.strip() else ''
        if kind == 'error':
            tb = clean_stream('\n'.join(o.get('traceback', [])) or f"{o.get('ename')}: {o.get('evalue')}")
            return f'<pre class="out error">{_esc(tb)}</pre>'
        return self.rich_output(o.get('data', {}), o.get('metadata', {}))

    def rich_output(self, data, meta):
        if WIDGET in data: return self.widget(data)
        for mime, ext in IMAGE_MIMES.items():
            if mime in data: return self.image(data[mime], mime, ext, meta.get(mime, {}), _text(data.get('text/plain')))
        if 'text/html' in data: return f'<div class="out html">{localize_images(_text(data["text/html"]), self.root)}</div>'
        if 'text/markdown' in data: return f'<div class="out md">{self.markdown(_text(data["text/markdown"]))}</div>'
        if 'text/latex' in data: return f'<div class="out">{tex_to_html(_text(data["text/latex"]).strip("$"), True)}</div>'
        if 'text/plain' in data: return f'<pre class="out plain">{_esc(ANSI.sub("", _text(data["text/plain"])))}</pre>'
        return ''

    def image(self, payload, mime, ext, meta, plain):
        raw = _text(payload).encode() if mime == 'image/svg+xml' else base64.b64decode(_text(payload))
        name = f'img/{hashlib.sha1(raw).hexdigest()[:16]}.{ext}'
        if name not in self.site.images:
            (self.site.out/name).write_bytes(raw)
            self.site.images[name] = _image_size(raw) if ext != 'svg' else None
        size = (meta.get('width'), meta.get('height')) if meta.get('width') else self.site.images[name]
        dims = f' width="{size[0]}" height="{size[1]}"' if size and size[0] and size[1] else ''
        alt = plain if plain and not plain.startswith('<') else 'output picture'
        return f'<div class="out img"><img src="{self.root}{name}"{dims} alt="{_esc(alt)}" loading="lazy"></div>'

    def widget(self, data):
        "A tqdm bar's final text from the saved widget state, else text/plain, else (an interactive widget) a note"
        text = widget_text(self.page.widgets, data[WIDGET].get('model_id'))
        plain = _text(data.get('text/plain'))
        if text is None and plain and not WIDGET_REPR.match(plain): text = plain
        if text: return f'<pre class="out widget">{_esc(text)}</pre>'
        return '<p class="out widget-note">An interactive widget: run the notebook to use it.</p>'

    def api(self, code, module):
        entries = api_entries(code, f'{self.site.cfg.lib}.{module}' if module else self.site.cfg.lib)
        return ''.join(self.api_entry(e) for e in entries)

    def api_entry(self, e):
        hid = self.unique_id(e['name'])
        self.headings.append((4, hid, e['name']))
        self.text.append(f"{e['name']} {e['doc']}")
        sig = f'<pre class="sig"><span class="kind">{e["kind"]}</span> {_esc(e["sig"])}</pre>'
        if '\n' in e['sig']:            # many parameters: folded
            short = f'<code>{e["kind"]} {_esc(e["sig"].split("(")[0])}(…)</code>: {len(e["params"])} parameters'
            sig = f'<details class="sig"><summary>{short}</summary>{sig}</details>'
        doc = self.markdown(e['doc']) if e['doc'] else ''
        methods = ''.join(f'<li><code>{_esc(s)}</code>{" — " + self.markdown(d).strip() if d else ""}</li>'
                          for s, d in e['methods'])
        methods = f'<ul class="methods">{methods}</ul>' if methods else ''
        return (f'<section class="api" id="{_esc(hid)}"><a class="api-name" href="#{_esc(hid)}">{_esc(e["name"])}</a>'
                f'{sig}{doc}{self.param_table(e["params"])}{methods}</section>')

    def param_table(self, params):
        "nbdev's docments table: name, type, default and comment of each parameter (columns left out when all empty)"
        if not any(p[3] for p in params): return ''
        cols = [i for i in (1, 2) if any(p[i] for p in params)]
        head = ''.join(f'<th>{("type", "default")[i - 1]}</th>' for i in cols)
        cell = lambda v: f'<td><code>{_esc(v)}</code></td>' if v else '<td></td>'
        rows = ''.join(f'<tr><td><code>{_esc(p[0])}</code></td>{"".join(cell(p[i]) for i in cols)}'
                       f'<td>{self.markdown(p[3]).strip() if p[3] else ""}</td></tr>' for p in params)
        head = f'<thead><tr><th>parameter</th>{head}<th></th></tr></thead>'
        table = f'<table class="params">{head}<tbody>{rows}</tbody></table>'
        if len(params) <= 12: return table
        return f'<details class="params"><summary>the {len(params)} parameters, explained</summary>{table}</details>'


def widget_text(state, model_id):
    "The final text of a tqdm progress bar (an HBox of HTML, progress, HTML) from a notebook's saved widget state"
    box = state.get(model_id or '', {})
    if box.get('model_name') != 'HBoxModel': return None
    parts = []
    for ref in box.get('state', {}).get('children', []):
        child = state.get(ref.replace('IPY_MODEL_', '', 1), {})
        kind, s = child.get('model_name'), child.get('state', {})
        if kind == 'HTMLModel':
            parts.append(html.unescape(re.sub(r'<[^>]+>', '', s.get('value', ''))).replace('\u2007', ' '))
        elif kind in ('FloatProgressModel', 'IntProgressModel'):
            done = round(10 * (s.get('value', 0) - s.get('min', 0)) / ((s.get('max', 1) - s.get('min', 0)) or 1))
            parts.append('|' + '█' * done + ' ' * (10 - done) + '|')
        else: return None
    return ''.join(parts).strip() or None


# ---------------------------------------------------------------------------------------------------------------------
# The site: pages around the bodies, search index, assets, nbdev-style aliases

class Site:
    "The pages and what they share: settings, the pictures written, the names links can point at"
    def __init__(self, out, root, cfg, pages):
        self.out, self.root, self.cfg, self.pages = out, root, cfg, pages
        self.by_rel = {p.rel: p for p in pages}
        self.images = {}                     # img/<hash>.<ext>: (width, height)
        self.symbols = collect_symbols(cfg.lib, pages)

    def href(self, page, target):
        "The link from `page` to the site path `target`"
        return posixpath.relpath(target, posixpath.dirname(page.out) or '.')

    def check_repo_link(self, page, url):
        "Note a GitHub or Colab link into this repository whose file does not exist"
        repo = re.sub(r'^https?://github\.com/', '', self.cfg.repo_url)
        m = re.match(rf'https://(?:github\.com|colab\.research\.google\.com/github)/{re.escape(repo)}/blob/[^/]+/([^#?]+)', url)
        if m and not (self.root/m.group(1)).exists(): STATS['repo_links'].append(f'{page.rel}: {url}')


def default_exp(page):
    return next((d['default_exp'] for d, _ in map(split_directives, page.cells) if d.get('default_exp')), '')


def collect_symbols(lib, pages):
    """{name: 'page.html#anchor'} for lessons (`04_lora`, `nbs/04_lora.ipynb`), modules (`loranb.lora`) and exported
    names (`loranb.lora.LoRALinear`, and `LoRALinear` where only one module defines it)"""
    symbols, short = {}, collections.defaultdict(set)
    for page in pages:
        stem = page.out[:-len('.html')]
        keys = [page.rel, page.rel.split('/', 1)[1]] + ([stem, posixpath.basename(stem)] if page.num else [])
        for key in keys: symbols.setdefault(key, page.out)
        module = default_exp(page)
        if module: symbols.setdefault(f'{lib}.{module}', page.out)
        for cell in page.cells:
            d, code = split_directives(cell) if cell['cell_type'] == 'code' else ({}, '')
            if not {'export', 'exports'} & d.keys() or not any(cell_view(d, code)): continue
            for e in api_entries(clean_code(code), f"{lib}.{d.get('export') or d.get('exports') or module}"):
                symbols.setdefault(e['name'], f"{page.out}#{e['name']}")
                short[e['name'].rsplit('.', 1)[1]].add(symbols[e['name']])
    symbols.update({k: v.pop() for k, v in short.items() if len(v) == 1 and k not in symbols})
    return symbols


def sidebar(site, page):
    def item(p):
        here = ' class="current" aria-current="page"' if p is page else ''
        return f'<li><a href="{site.href(page, p.out)}"{here}>{_esc(p.label)}</a></li>'
    groups = [('', 'home'), ('The course', 'main'), ('Inside the engine', 'engine')]
    html_groups = []
    for title, part in groups:
        items = ''.join(item(p) for p in site.pages if p.part == part)
        if items: html_groups.append((f'<p class="group">{title}</p>' if title else '') + f'<ul>{items}</ul>')
    return ('<nav class="sidebar" aria-label="Lessons"><div class="search">'
            '<input id="search" type="search" placeholder="Search the course" aria-label="Search the course" autocomplete="off">'
            '<ol id="search-results" hidden></ol></div>'
            f'<details id="lessons" open><summary>Lessons</summary>{"".join(html_groups)}</details></nav>')


def pager(site, page, prev, nxt):
    def link(p, rel, word):
        if not p: return '<span></span>'
        return f'<a rel="{rel}" class="{rel}" href="{site.href(page, p.out)}"><span>{word}</span>{_esc(p.label)}</a>'
    links = link(prev, 'prev', 'Previous') + link(nxt, 'next', 'Next')
    return f'<nav class="pager" aria-label="Previous and next">{links}</nav>'


def page_header(site, page, pr):
    kicker = {'home': '', 'main': f'Lesson {page.num}', 'engine': f'Inside the engine · {page.num}'}[page.part]
    badge = (f'<a class="colab" href="{_esc(site.cfg.colab(page.rel))}"><img src="{pr.root}assets/colab-badge.svg" '
             f'alt="Open In Colab" width="117" height="20"></a>')
    source = f'<a class="nb-link" href="{_esc(site.cfg.blob(page.rel))}">{_esc(page.rel)}</a>'
    toc = ''.join(f'<li><a href="#{_esc(h)}">{_esc(t)}</a></li>' for level, h, t in pr.headings if level == 2)
    toc = f'<details class="toc"><summary>On this page</summary><ul>{toc}</ul></details>' if toc else ''
    return (f'<header class="page-head">{f"<p class=kicker>{kicker}</p>" if kicker else ""}<h1>{_esc(page.title)}</h1>'
            f'{f"<div class=lead>{pr.markdown(page.desc)}</div>" if page.desc else ""}'
            f'<p class="nb-links">{badge} {source}</p>{toc}</header>')


def page_html(site, page, pr, body, prev, nxt):
    title = page.title if page.part == 'home' else f'{page.label} · {site.cfg.lib}'
    root = pr.root
    return f'''<!doctype html>
<html lang="en" data-root="{root}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<meta name="description" content="{_esc(page.desc)}">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{root}assets/style.css">
<script src="{root}assets/site.js" defer></script>
</head>
<body>
<header class="topbar"><a class="brand" href="{root}index.html">{_esc(site.cfg.lib)}</a>
<span class="tagline">{_esc(site.pages[0].desc if site.pages else '')}</span></header>
<div class="layout">
{sidebar(site, page)}
<main>
<article>
{page_header(site, page, pr)}
{body}
</article>
{pager(site, page, prev, nxt)}
<footer>Built from the executed notebooks by <code>tools/site.py</code>.
<a href="{_esc(site.cfg.repo_url)}">Source on GitHub</a>.</footer>
</main>
</div>
</body>
</html>
'''


def plain_text(markdown_source):
    "Prose for the search index: markdown source without its markup"
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', markdown_source)
    text = re.sub(r'<[^>]+>|[`*#>|$\\]|\{|\}', ' ', text)
    return re.sub(r'\s+', ' ', text).strip()


def search_entries(page, pr):
    "One entry for the page (title, description, prose) and one per heading and API entry"
    entries = [dict(u=page.out, t=page.label if page.part != 'home' else page.title, d=page.desc,
                    x=plain_text(' '.join(pr.text)))]
    entries += [dict(u=f'{page.out}#{h}', t=t, p=page.label) for level, h, t in pr.headings if level <= 4]
    return entries


# ---------------------------------------------------------------------------------------------------------------------
# nbdev-style aliases: `lora.html.md` (the page as markdown, nbdev's `.html.md`) and `lora.html` (a redirect)

def nbdev_name(page):
    "nbdev's page name for a notebook (config.nbpath2html): the numeric prefix dropped, lower case"
    folder, name = posixpath.split(page.out)
    return posixpath.join(folder, re.sub(r'^\d+[a-zA-Z0-9]*_', '', name.lower()))


def page_markdown(site, page, pr):
    "The page as markdown: prose, shown code, text outputs, pictures as links, API entries"
    parts = [f'# {page.title}', f'> {page.desc}' if page.desc else '']
    for cell in page.cells:
        if cell['cell_type'] == 'markdown': parts.append(cell['source'])
        if cell['cell_type'] != 'code': continue
        d, code = split_directives(cell)
        show_code, show_out = cell_view(d, code)
        if show_code and clean_code(code).strip(): parts.append(f'```python\n{clean_code(code)}\n```')
        if show_out: parts += [_output_markdown(pr, o) for o in cell.get('outputs', [])]
        if (show_code or show_out) and {'export', 'exports'} & d.keys():
            module = d.get('export') or d.get('exports') or pr.module
            parts += [f"#### `{e['name']}`\n\n```python\n{e['sig']}\n```\n\n{e['doc']}"
                      for e in api_entries(clean_code(code), f'{site.cfg.lib}.{module}')]
    return '\n\n'.join(p.strip() for p in parts if p and p.strip()) + '\n'


def _output_markdown(pr, o):
    data = o.get('data', {})
    if o.get('output_type') == 'stream': text = clean_stream(_text(o.get('text')))
    elif WIDGET in data: text = widget_text(pr.page.widgets, data[WIDGET].get('model_id')) or ''
    elif any(m in data for m in IMAGE_MIMES):
        mime = next(m for m in IMAGE_MIMES if m in data)
        raw = _text(data[mime]).encode() if mime == 'image/svg+xml' else base64.b64decode(_text(data[mime]))
        return f'![output picture]({pr.root}img/{hashlib.sha1(raw).hexdigest()[:16]}.{IMAGE_MIMES[mime]})'
    else: text = ANSI.sub('', _text(data.get('text/plain', '')))
    lines = text.strip('\n').splitlines()
    if len(lines) > 40: lines = lines[:40] + [f'... ({len(lines) - 40} more lines)']
    return '```\n' + '\n'.join(lines) + '\n```' if lines else ''


def write_aliases(site, markdowns):
    "Write `<nbdev name>.md` for every page and `<nbdev name>` redirecting to the page where the names differ"
    seen = {}
    for page in site.pages:
        alias = nbdev_name(page)
        if alias in seen: STATS['alias_clash'].append(f'{page.rel} and {seen[alias]} are both {alias}'); continue
        seen[alias] = page.rel
        (site.out/(alias + '.md')).write_text(markdowns[page.rel], encoding='utf-8')
        if alias == page.out or alias in {p.out for p in site.pages}: continue
        target = posixpath.relpath(page.out, posixpath.dirname(alias) or '.')
        (site.out/alias).write_text(
            f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(page.title)}</title>'
            f'<link rel="icon" href="data:,"><meta http-equiv="refresh" content="0; url={target}">'
            f'<link rel="canonical" href="{target}"></head>\n<body><p>This page is now '
            f'<a href="{target}">{_esc(page.label)}</a>.</p></body></html>\n', encoding='utf-8')


# ---------------------------------------------------------------------------------------------------------------------
# Build

def build(out, root=ROOT):
    "Write the whole site into `out` (emptied first); returns the Site"
    out = Path(out)
    if out.exists(): shutil.rmtree(out)
    for sub in ('img', 'assets'): (out/sub).mkdir(parents=True)
    STATS.clear()
    site = Site(out, root, Config.read(root), discover(root))
    index, markdowns = [], {}
    for i, page in enumerate(site.pages):
        pr = PageRender(site, page)
        body = pr.body()
        prev, nxt = site.pages[i - 1] if i else None, site.pages[i + 1] if i + 1 < len(site.pages) else None
        (out/page.out).parent.mkdir(parents=True, exist_ok=True)
        (out/page.out).write_text(page_html(site, page, pr, body, prev, nxt), encoding='utf-8')
        index += search_entries(page, pr)
        markdowns[page.rel] = page_markdown(site, page, pr)
    write_aliases(site, markdowns)
    write_assets(out, index)
    return site


def write_assets(out, index):
    from pygments.formatters import HtmlFormatter
    (out/'assets'/'style.css').write_text(CSS + HtmlFormatter(style='friendly').get_style_defs('.highlight'), encoding='utf-8')
    (out/'assets'/'site.js').write_text(JS, encoding='utf-8')
    (out/'assets'/'colab-badge.svg').write_text(COLAB_BADGE, encoding='utf-8')
    data = json.dumps(index, ensure_ascii=False, separators=(',', ':'))
    (out/'assets'/'search.js').write_text(f'window.SITE_SEARCH = {data};\n', encoding='utf-8')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', default=str(ROOT/'_site'), help='output folder, emptied first (default: _site)')
    args = ap.parse_args(argv)
    start = time.time()
    site = build(args.out)
    print(f'wrote {len(site.pages)} pages and {len(site.images)} pictures to {args.out} in {time.time() - start:.1f} s')
    for kind, what in (('tex_fallback', 'formulas left as TeX text'), ('repo_links', 'links to files not in the repository'),
                       ('alias_clash', 'nbdev page names shared')):
        if STATS[kind]: print(f'note: {len(STATS[kind])} {what}:\n  ' + '\n  '.join(STATS[kind]))
    return site


# ---------------------------------------------------------------------------------------------------------------------
# Assets: written as they are, no external resource anywhere

COLAB_BADGE = '''<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" viewBox="0 0 117 20" role="img" aria-label="Open in Colab">
<rect width="117" height="20" rx="3" fill="#555"/><rect x="28" width="89" height="20" rx="3" fill="#1f6feb"/>
<rect x="28" width="6" height="20" fill="#1f6feb"/>
<circle cx="10" cy="10" r="4.2" fill="none" stroke="#f9ab00" stroke-width="2.4"/>
<circle cx="18" cy="10" r="4.2" fill="none" stroke="#e8710a" stroke-width="2.4"/>
<text x="72.5" y="14" fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" text-anchor="middle">Open in Colab</text>
</svg>
'''

CSS = '''/* loranb course site */
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; --accent: #0b5cad; --side: 17rem; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.6;
       font: 16px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
a { color: var(--accent); }
code, pre, .sig { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
code { font-size: .88em; background: var(--soft); padding: .1em .3em; border-radius: 4px; }
pre code { background: none; padding: 0; }
.topbar { display: flex; align-items: baseline; gap: 1rem; padding: .55rem 1.2rem; border-bottom: 1px solid var(--line);
          background: #fff; position: sticky; top: 0; z-index: 20; }
.brand { font-weight: 700; font-size: 1.15rem; color: var(--fg); text-decoration: none; }
.tagline { color: var(--muted); font-size: .85rem; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.layout { display: grid; grid-template-columns: var(--side) minmax(0, 1fr); }
.sidebar { position: sticky; top: 2.9rem; height: calc(100vh - 2.9rem); overflow-y: auto; padding: 1rem .9rem 2rem;
           border-right: 1px solid var(--line); background: #fbfcfd; font-size: .92rem; }
.sidebar summary { font-weight: 600; cursor: pointer; margin: .6rem 0 .2rem; }
.sidebar ul { list-style: none; margin: 0; padding: 0; }
.sidebar li a { display: block; padding: .22rem .5rem; border-radius: 5px; color: var(--fg); text-decoration: none; }
.sidebar li a:hover { background: #eef2f6; }
.sidebar li a.current { background: #e1ecf8; color: var(--accent); font-weight: 600; }
.sidebar .group { margin: .9rem 0 .2rem .5rem; font-size: .75rem; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); }
.search { position: relative; }
#search { width: 100%; padding: .45rem .6rem; font: inherit; border: 1px solid var(--line); border-radius: 6px; }
#search-results { position: absolute; left: 0; right: 0; top: 2.4rem; overflow-wrap: anywhere; z-index: 30; margin: 0; padding: .3rem;
                  list-style: none; background: #fff; border: 1px solid var(--line); border-radius: 6px;
                  box-shadow: 0 6px 24px rgba(0,0,0,.12); max-height: 70vh; overflow-y: auto; }
#search-results li a { display: block; padding: .35rem .5rem; border-radius: 4px; text-decoration: none; color: var(--fg); }
#search-results li a:hover, #search-results li a:focus { background: #eef2f6; }
#search-results .where, #search-results .snip { display: block; font-size: .78rem; color: var(--muted); }
#search-results .none { padding: .4rem .5rem; color: var(--muted); }
main { min-width: 0; padding: 1.2rem 2rem 3rem; max-width: 62rem; }
.page-head { border-bottom: 1px solid var(--line); margin-bottom: 1.2rem; padding-bottom: .6rem; }
.page-head h1 { margin: .1rem 0 .3rem; font-size: 2rem; line-height: 1.25; }
.kicker { margin: 0; color: var(--muted); font-size: .85rem; text-transform: uppercase; letter-spacing: .06em; }
.lead { color: var(--muted); font-size: 1.08rem; }
.lead p { margin: 0 0 .5rem; }
.nb-links { display: flex; flex-wrap: wrap; align-items: center; gap: .4rem .8rem; font-size: .88rem; margin: .4rem 0; }
.nb-links img, img.badge { vertical-align: middle; }
.toc summary { cursor: pointer; color: var(--muted); font-size: .9rem; }
.toc ul { margin: .3rem 0 .5rem; padding-left: 1.2rem; font-size: .9rem; columns: 2 16rem; }
h2 { margin-top: 2rem; padding-top: .3rem; border-top: 1px solid #eef0f2; }
h1, h2, h3, h4 { line-height: 1.3; scroll-margin-top: 3.5rem; }
.anchor { margin-left: .4rem; color: #b6bec8; text-decoration: none; font-weight: 400; visibility: hidden; }
h1:hover .anchor, h2:hover .anchor, h3:hover .anchor, h4:hover .anchor { visibility: visible; }
.cell { margin: .9rem 0; }
.cell.md table { border-collapse: collapse; display: block; overflow-x: auto; font-size: .92rem; }
.cell.md th, .cell.md td { border: 1px solid var(--line); padding: .3rem .55rem; vertical-align: top; }
.cell.md th { background: var(--soft); }
.cell.md img { max-width: 100%; height: auto; }
.input .highlight { background: var(--soft); border: 1px solid var(--line); border-left: 3px solid #8fb4dd; border-radius: 6px; }
.highlight pre, pre.out, pre.sig { margin: 0; padding: .6rem .8rem; overflow-x: auto; font-size: .82rem; line-height: 1.45; }
.cell.md .highlight, .cell.md > pre, .out.md pre { background: var(--soft); border-radius: 6px; }
.cell.md > pre, .out.md pre { padding: .6rem .8rem; overflow-x: auto; font-size: .82rem; line-height: 1.45; }
details.sig summary { cursor: pointer; padding: .3rem 0; }
details.sig summary code { background: none; padding: 0; }
a.sym { text-decoration: none; }
a.sym code { color: var(--accent); }
.outputs { margin: .35rem 0 0 .2rem; }
pre.out { max-height: 22em; overflow: auto; background: #fff; border: 1px solid #e6e9ed; border-radius: 6px;
          white-space: pre; margin: .3rem 0; }
pre.out.stderr { background: #fff8f0; border-color: #f3dcc0; }
pre.out.error { background: #fff1f1; border-color: #f2c4c4; }
pre.out.widget { color: var(--muted); max-height: 8em; }
.widget-note { color: var(--muted); font-style: italic; font-size: .9rem; margin: .3rem 0; }
.out.img { margin: .4rem 0; }
.out.img img { max-width: 100%; height: auto; max-height: 34rem; width: auto; object-fit: contain; }
.out.html { overflow-x: auto; }
.flags { margin-bottom: .2rem; }
.flag { display: inline-block; font-size: .7rem; text-transform: uppercase; letter-spacing: .05em; padding: 0 .45rem;
        border-radius: 9px; background: #fff3cd; color: #6b5200; border: 1px solid #f0dc9a; margin-right: .3rem; }
.api { border: 1px solid var(--line); border-left: 3px solid #2da44e; border-radius: 6px; padding: .5rem .9rem;
       margin: .6rem 0 1.2rem; background: #fbfdfb; scroll-margin-top: 3.5rem; }
.api-name { font-weight: 600; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
            color: var(--fg); text-decoration: none; font-size: .95rem; }
.api pre.sig { background: none; padding: .3rem 0; white-space: pre-wrap; word-break: break-word; }
.api .kind { color: #8250df; }
.api p { margin: .3rem 0; }
.params { margin: .3rem 0; font-size: .85rem; }
table.params { border-collapse: collapse; display: block; overflow-x: auto; }
table.params td, table.params th { border-bottom: 1px solid #e6e9ed; padding: .2rem .5rem; text-align: left; vertical-align: top; }
table.params td p { margin: 0; }
.methods { font-size: .88rem; margin: .3rem 0; padding-left: 1.2rem; }
.methods p { display: inline; }
math { font-family: "STIX Two Math", "Latin Modern Math", "Cambria Math", math; font-size: 1.05em; }
math[display="block"] { display: block math; margin: .8rem 0; overflow-x: auto; overflow-y: hidden; padding: .2rem 0; }
code.tex { background: none; color: #444; }
.ext-img { color: var(--muted); }
.pager { display: flex; justify-content: space-between; gap: 1rem; margin-top: 2.5rem; border-top: 1px solid var(--line); padding-top: 1rem; }
.pager a { display: block; max-width: 48%; padding: .5rem .8rem; border: 1px solid var(--line); border-radius: 6px; text-decoration: none; }
.pager a span { display: block; font-size: .75rem; color: var(--muted); text-transform: uppercase; letter-spacing: .05em; }
.pager a.next { text-align: right; margin-left: auto; }
footer { margin-top: 2rem; color: var(--muted); font-size: .82rem; }
@media (max-width: 900px) {
  .layout { grid-template-columns: 1fr; }
  .sidebar { position: static; height: auto; border-right: 0; border-bottom: 1px solid var(--line); padding: .7rem 1rem; }
  main { padding: 1rem 1rem 2.5rem; }
  .tagline { display: none; }
  .page-head h1 { font-size: 1.6rem; }
  .highlight pre, pre.out { font-size: .76rem; }
}
'''

JS = r'''/* loranb site: the lessons menu folds on small screens; a search over assets/search.js, loaded on first use. */
(function () {
  'use strict';
  var root = document.documentElement.getAttribute('data-root') || '';
  var lessons = document.getElementById('lessons');
  if (lessons && window.matchMedia('(max-width: 900px)').matches) lessons.open = false;
  var box = document.getElementById('search'), list = document.getElementById('search-results');
  if (!box || !list) return;
  var index = null, waiting = [];

  function load(then) {
    if (index) { then(); return; }
    waiting.push(then);
    if (waiting.length > 1) return;
    var s = document.createElement('script');
    s.src = root + 'assets/search.js';
    s.onload = function () { index = window.SITE_SEARCH || []; waiting.forEach(function (f) { f(); }); waiting = []; };
    document.head.appendChild(s);
  }

  function score(e, terms) {               /* every word must match; a page's title counts most */
    var t = e.t.toLowerCase(), d = (e.d || '').toLowerCase(), x = (e.x || '').toLowerCase(), s = 0;
    for (var i = 0; i < terms.length; i++) {
      var w = terms[i];
      if (t.indexOf(w) >= 0) s += e.x !== undefined ? 30 : 10;
      else if (d.indexOf(w) >= 0) s += 5;
      else if (x.indexOf(w) >= 0) s += 1;
      else return 0;
    }
    return s;
  }

  function snippet(e, terms) {
    var x = e.x || '', at = x.toLowerCase().indexOf(terms[0]);
    if (at < 0) return e.d || '';
    var from = Math.max(0, at - 50);
    return (from ? '…' : '') + x.slice(from, at + 90) + '…';
  }

  function item(e, terms) {
    var li = document.createElement('li'), a = document.createElement('a');
    a.href = root + e.u;
    a.textContent = e.t;
    var small = document.createElement('span');
    small.className = e.p ? 'where' : 'snip';
    small.textContent = e.p ? 'in ' + e.p : snippet(e, terms);
    a.appendChild(small);
    li.appendChild(a);
    return li;
  }

  function show() {
    var q = box.value.trim().toLowerCase();
    list.textContent = '';
    if (q.length < 2) { list.hidden = true; return; }
    var terms = q.split(/\s+/);
    var hits = index.map(function (e) { return [score(e, terms), e]; })
      .filter(function (h) { return h[0] > 0; })
      .sort(function (a, b) { return b[0] - a[0]; }).slice(0, 20);
    hits.forEach(function (h) { list.appendChild(item(h[1], terms)); });
    if (!hits.length) {
      var li = document.createElement('li');
      li.className = 'none';
      li.textContent = 'Nothing found';
      list.appendChild(li);
    }
    list.hidden = false;
  }

  box.addEventListener('focus', function () { load(function () {}); });
  box.addEventListener('input', function () { load(show); });
  box.addEventListener('keydown', function (ev) {
    var first = list.querySelector('a');
    if (ev.key === 'Enter' && first) window.location.href = first.href;
    if (ev.key === 'Escape') { box.value = ''; list.hidden = true; }
  });
  document.addEventListener('click', function (ev) {
    if (!ev.target.closest || !ev.target.closest('.search')) list.hidden = true;
  });
})();
'''


if __name__ == '__main__':
    main()
