"""The shape of the codebase, read from its source: each module says its job, the imports have no cycle, the
argparse namespace stays in the command-line layer, and what one module uses of another is typed.

Each rule is checked on the repository and, so that a broken checker cannot pass, on a planted violation."""
import ast
import os
from typing import Dict, List, Set

from conftest import ROOT

# The command-line layer: the only code below the scripts that may take the argparse namespace.
COMMAND_LINE = {'arguments', 'search_arguments'}
NAMESPACE_ALLOWED = {('stopping', 'run_main')}  # it only hands the namespace to the script's main
# DARTS's own modules keep DARTS's signatures for nn.Module.forward.
DARTS_NAMED = {'operations', 'model', 'model_search', 'model_search_nb201', 'genotypes', 'utils',
               'architect_evolution'}


def parse_modules(root: str = ROOT) -> Dict[str, ast.Module]:
    return {name[:-3]: ast.parse(open(os.path.join(root, name)).read(), name)
            for name in sorted(os.listdir(root)) if name.endswith('.py')}


def is_script(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.If) and "__name__ == '__main__'" in ast.unparse(node.test) for node in tree.body)


def top_level_imports(tree: ast.Module, modules: Set[str]) -> Set[str]:
    """The project modules a module imports when it is imported (not inside functions, not for type checkers)."""
    found = set()
    for node in _module_level(tree.body):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
            found.add(node.module)
    return found


def _module_level(statements: List[ast.stmt]) -> List[ast.stmt]:
    """The statements that run on import: these, and those inside top-level if/try blocks, except the blocks
    under `if TYPE_CHECKING:`."""
    found = []
    for node in statements:
        if isinstance(node, ast.If):
            if 'TYPE_CHECKING' not in ast.unparse(node.test):
                found += _module_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            found += _module_level(node.body + [s for h in node.handlers for s in h.body] + node.orelse
                                   + node.finalbody)
        else:
            found.append(node)
    return found


def used_names(trees: Dict[str, ast.Module]) -> Dict[str, Set[str]]:
    """module -> the names other project modules import from it or reach as module.name."""
    used: Dict[str, Set[str]] = {}
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in trees and node.module != name:
                used.setdefault(node.module, set()).update(alias.name for alias in node.names)
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in trees and node.value.id != name):
                used.setdefault(node.value.id, set()).add(node.attr)
    return used


def import_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One cycle of the import graph as [a, b, ..., a], or [] when there is none."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _is_dunder(name: str) -> bool:
    return name.startswith('__') and name.endswith('__')


def _unannotated(function: ast.FunctionDef) -> List[str]:
    args = function.args
    missing = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs
               if a.annotation is None and a.arg not in ('self', 'cls')]
    missing += ['*' + a.arg for a in (args.vararg, args.kwarg) if a is not None and a.annotation is None]
    if function.returns is None and function.name != '__init__':
        missing.append('return')
    return missing


def boundary_functions(module: str, tree: ast.Module, used: Set[str]):
    """(qualified name, function) of what other modules meet: in a library module its public functions and the
    public and special methods (__init__, __call__, __iter__, ...) of its public classes; in a script, what
    other modules import from it."""
    script = is_script(tree)
    for node in tree.body:
        public = not node.name.startswith('_') if hasattr(node, 'name') else False
        if isinstance(node, FUNCTIONS) and (node.name in used if script else public):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and (node.name in used if script else public):
            for method in node.body:
                if not isinstance(method, FUNCTIONS):
                    continue
                if method.name.startswith('_') and not _is_dunder(method.name):
                    continue
                if method.name == 'forward' and module in DARTS_NAMED:
                    continue
                yield f'{node.name}.{method.name}', method


def untyped_boundaries(trees: Dict[str, ast.Module]) -> List[str]:
    used = used_names(trees)
    imported = {m for tree in trees.values() for m in top_level_imports(tree, set(trees))}
    imported |= set(used)
    found = []
    for module in sorted(imported):
        for name, function in boundary_functions(module, trees[module], used.get(module, set())):
            missing = _unannotated(function)
            if missing:
                found.append(f"{module}.{name}: {', '.join(missing)}")
    return found


def namespace_takers(trees: Dict[str, ast.Module]) -> List[str]:
    """Functions below the scripts (and outside the command-line layer) that take the argparse namespace:
    a parameter named args, or one annotated as a Namespace."""
    found = []
    for module, tree in trees.items():
        if module in COMMAND_LINE or is_script(tree):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or (module, node.name) in NAMESPACE_ALLOWED:
                continue
            for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
                if a.arg == 'args' or (a.annotation is not None and 'Namespace' in ast.unparse(a.annotation)):
                    found.append(f'{module}.{node.name}({a.arg})')
    return found


def planted(**sources: str) -> Dict[str, ast.Module]:
    return {name: ast.parse(source) for name, source in sources.items()}


# ----------------------------------------------------------------------------------------------------------

def modules_without_a_job(trees: Dict[str, ast.Module]) -> List[str]:
    return [name for name, tree in trees.items() if not (ast.get_docstring(tree) or '').strip()]


def test_every_module_opens_with_the_job_it_does():
    trees = parse_modules()
    assert len(trees) > 30
    assert modules_without_a_job(trees) == []
    assert modules_without_a_job(planted(said='"""Does one thing."""\nimport os\n', silent='import os\n',
                                         late='import os\n"""Too late to be the docstring."""\n')) == \
        ['silent', 'late']


def test_the_imports_have_no_cycle():
    trees = parse_modules()
    graph = {name: top_level_imports(tree, set(trees)) for name, tree in trees.items()}
    assert sum(map(len, graph.values())) > 100  # the graph was read
    assert import_cycle(graph) == []
    assert import_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == ['a', 'b', 'c', 'a']
    assert import_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) == []
    guarded = planted(a='try:\n    import b\nexcept ImportError:\n    b = None\n',
                      b='from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n'
                        'def f():\n    import a\n')
    assert top_level_imports(guarded['a'], {'a', 'b'}) == {'b'}
    assert top_level_imports(guarded['b'], {'a', 'b'}) == set()


def test_only_the_command_line_layer_takes_the_argparse_namespace():
    assert namespace_takers(parse_modules()) == []
    trees = planted(lib='import argparse\n'
                        'def f(args):\n    return args.seed\n'
                        'def g(ns: argparse.Namespace) -> int:\n    return ns.seed\n'
                        'def h(seed: int) -> int:\n    return seed\n',
                    arguments='def check(args):\n    pass\n')
    assert namespace_takers(trees) == ['lib.f(args)', 'lib.g(ns)']


def test_what_one_module_uses_of_another_is_typed():
    assert untyped_boundaries(parse_modules()) == []
    trees = planted(
        lib='class Space:\n'
            '    def decode(self, alphas):\n        return alphas\n'
            '    def __call__(self, x) -> int:\n        return x\n'
            '    def _private(self, x):\n        return x\n'
            'def typed(x: int) -> int:\n    return x\n'
            'def untyped(x: int):\n    return x\n',
        tool="from lib import typed\n"
             "def helper(x):\n    return x\n"
             "def main(argv=None) -> None:\n    pass\n"
             "if __name__ == '__main__':\n    main()\n",
        user='import lib\nfrom tool import main\n')
    assert untyped_boundaries(trees) == ['lib.Space.decode: alphas, return', 'lib.Space.__call__: x',
                                         'lib.untyped: return', 'tool.main: argv']
