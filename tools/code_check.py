"""Checks of loranb's shape that tests cannot see, run by tools/test.sh (so by CI):

1. no function in loranb/ is longer than 60 lines (decorators and docstring included), and loranb/train.py is at most
   500 lines;
2. no import circle between loranb's modules;
3. in the main-path lessons 00-06, an '## Under the hood' section holds at most a quarter of the lesson's code lines;
4. in every lesson, no code cell uses a name that only a later cell of the lesson defines or imports.

usage: python tools/code_check.py   (prints one line per problem; exit 1 if any)"""
import ast, builtins, json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
pkg, nbs = root/'loranb', root/'nbs'
MAX_DEF, MAX_TRAIN, MAX_HOOD = 60, 500, 0.25

def long_functions():
    "Problems: functions over MAX_DEF lines, and train.py over MAX_TRAIN."
    out = []
    for p in sorted(pkg.glob('*.py')):
        if p.name.startswith('_'): continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - min([node.lineno] + [d.lineno for d in node.decorator_list]) + 1
                if n > MAX_DEF: out.append(f"loranb/{p.name}: {node.name}() is {n} lines (limit {MAX_DEF})")
    n = len((pkg/'train.py').read_text().splitlines())
    if n > MAX_TRAIN: out.append(f"loranb/train.py is {n} lines (limit {MAX_TRAIN})")
    return out

def module_imports():
    "{module: set of loranb modules it imports at its top level or inside functions}."
    graph = {}
    for p in pkg.glob('*.py'):
        if p.name.startswith('_'): continue
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module: deps.add(node.module.split('.')[0])
                elif node.level == 1: deps.update(a.name for a in node.names)
                elif (node.module or '').startswith('loranb.'): deps.add(node.module.split('.')[1])
        graph[p.stem] = deps & {q.stem for q in pkg.glob('*.py')}
    return graph

def import_circles():
    "Problems: every import circle, as a path a -> b -> ... -> a."
    graph, out, state = module_imports(), [], {}
    def visit(m, path):
        state[m] = 'open'
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 'open': out.append('import circle: ' + ' -> '.join(path[path.index(d):] + [d]))
            elif d not in state: visit(d, path + [d])
        state[m] = 'done'
    for m in sorted(graph):
        if m not in state: visit(m, [m])
    return out

def code_lines(cell):
    "Non-blank, non-directive lines of a code cell."
    return [l for l in ''.join(cell['source']).splitlines() if l.strip() and not l.lstrip().startswith('#|')]

def hood_share(nb):
    "Share of the lesson's code lines that sit under '## Under the hood' (up to the next level-2 heading)."
    total = hood = 0; inside = False
    for c in nb['cells']:
        text = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            for line in text.splitlines():
                if line.startswith('## '): inside = line.strip().lower() == '## under the hood'
        else:
            n = len(code_lines(c)); total += n; hood += n * inside
    return hood / total if total else 0.0

def _bound(tree):
    "Names a cell binds: assignments, defs, classes, imports, loop and with targets."
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)): names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split('.')[0] for a in node.names)
        elif isinstance(node, ast.arg): names.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name: names.add(node.name)
    return names

def _parse(cell):
    src = '\n'.join(l for l in ''.join(cell['source']).splitlines() if not l.lstrip().startswith(('%', '!')))
    try: return ast.parse(src)
    except SyntaxError: return None

def used_before_defined(nb):
    "Names a code cell loads (at its top level) that no earlier cell binds but a later one does."
    cells = [t for c in nb['cells'] if c['cell_type'] == 'code' and (t := _parse(c)) is not None]
    bound = [_bound(t) for t in cells]
    out, seen = [], set(dir(builtins))
    for i, tree in enumerate(cells):
        loads = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        later = set().union(*bound[i + 1:]) if i + 1 < len(bound) else set()
        out += sorted(n for n in loads - seen - bound[i] if n in later)
        seen |= bound[i]
    return out

def lesson_problems():
    out = []
    for f in sorted(nbs.glob('*.ipynb')) + sorted(nbs.glob('engine/*.ipynb')):
        nb, name = json.loads(f.read_text()), f.relative_to(nbs).as_posix()
        if re.match(r'0[0-6]_', f.name) and (share := hood_share(nb)) > MAX_HOOD:
            out.append(f"{name}: 'Under the hood' holds {share:.0%} of the code lines (limit {MAX_HOOD:.0%})")
        for n in used_before_defined(nb): out.append(f"{name}: '{n}' is used before the cell that defines or imports it")
    return out

if __name__ == '__main__':
    problems = long_functions() + import_circles() + lesson_problems()
    for p in problems: print('PROBLEM:', p)
    if not problems: print('code check: no function over 60 lines, train.py within 500, no import circle, lessons in order')
    sys.exit(1 if problems else 0)
