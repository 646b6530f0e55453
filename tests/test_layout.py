"""The shape of the codebase, read from its source: two floors (the scripts and the algorithm at the root, the
machinery in folders by job, no import up a tier, into a script or round a circle of folders), each module
says its job, the imports have no cycle, the argparse namespace stays in the command-line layer, and what one
module uses of another is typed.

Each rule is checked on the repository and, so that a broken checker cannot pass, on a planted violation."""
import ast
import importlib.metadata
import os
import sys
from typing import Dict, List, Set

from conftest import ROOT

# The command-line layer: the only code below the scripts that may take the argparse namespace.
COMMAND_LINE = {'cli.arguments', 'cli.search_arguments'}
NAMESPACE_ALLOWED = {('runtime.stopping', 'run_main')}  # it only hands the namespace to the script's main
# DARTS's own modules keep DARTS's signatures for nn.Module.forward.
DARTS_NAMED = {'operations', 'model', 'model_search', 'model_search_nb201', 'genotypes', 'utils',
               'architect_evolution'}
# The tiers, lowest first. The root's modules that are not scripts are the algorithm (ALGORITHM), except
# utils, which imports nothing of the project; the scripts are above everything. A module imports only from its
# own tier or lower ones.
ALGORITHM = '(the algorithm at the root)'
TIERS = [{'utils', 'runtime'},  # helpers, settings, run directories, checkpoints, devices, logs, stopping
         {'inputs', 'stats'},  # images and NAS-Bench-201's files; rank statistics and comparisons
         {ALGORITHM},
         {'search', 'speed'},  # what builds on the algorithm: budgets, records, random search; fast layers
         {'cli'}]  # the command lines
# Folder names a package must not take: the one the docs keep datasets in (--data ../data, data/...).
RESERVED = {'data'}


def parse_modules(root: str = ROOT) -> Dict[str, ast.Module]:
    """Every module of the project by its import name: the root's files, and each package's (`pkg` for its
    __init__.py, `pkg.name` for the others)."""
    files = {name[:-3]: name for name in sorted(os.listdir(root)) if name.endswith('.py')}
    for package in packages(root):
        for name in sorted(os.listdir(os.path.join(root, package))):
            if name.endswith('.py'):
                files[package if name == '__init__.py' else f'{package}.{name[:-3]}'] = os.path.join(package, name)
    return {module: ast.parse(open(os.path.join(root, path)).read(), path) for module, path in files.items()}


def packages(root: str = ROOT) -> List[str]:
    """The folders at the root that hold Python code, except the tests' and the examples'."""
    return [name for name in sorted(os.listdir(root))
            if os.path.isdir(os.path.join(root, name)) and name not in ('tests', 'examples')
            and not name.startswith('.') and any(f.endswith('.py') for f in os.listdir(os.path.join(root, name)))]


def is_script(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.If) and "__name__ == '__main__'" in ast.unparse(node.test) for node in tree.body)


def top_level_imports(tree: ast.Module, modules: Set[str]) -> Set[str]:
    """The project modules a module imports when it is imported (not inside functions, not for type checkers)."""
    return set(_bindings(_module_level(tree.body), modules).values()) | {
        alias.name for node in _module_level(tree.body) if isinstance(node, ast.Import)
        for alias in node.names if alias.name in modules}


def _bindings(statements: List[ast.stmt], modules: Set[str]) -> Dict[str, str]:
    """name -> the project module it is bound to or imported from, for the imports among `statements`."""
    bound = {}
    for node in statements:
        if isinstance(node, ast.Import):
            bound.update({alias.asname or alias.name: alias.name for alias in node.names if alias.name in modules})
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
            for alias in node.names:
                submodule = f'{node.module}.{alias.name}'
                bound[alias.asname or alias.name] = submodule if submodule in modules else node.module
    return bound


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
    modules = set(trees)
    for name, tree in trees.items():
        statements = list(ast.walk(tree))
        bound = _bindings([n for n in statements if isinstance(n, (ast.Import, ast.ImportFrom))], modules)
        for node in statements:
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in trees and node.module != name:
                used.setdefault(node.module, set()).update(
                    alias.name for alias in node.names if f'{node.module}.{alias.name}' not in modules)
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and bound.get(node.value.id, name) != name):
                used.setdefault(bound[node.value.id], set()).add(node.attr)
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


def group(module: str, trees: Dict[str, ast.Module]) -> str:
    """The folder a module lives in; the root's modules are the scripts (each its own) or the algorithm."""
    if '.' in module or module in {m.split('.')[0] for m in trees if '.' in m}:
        return module.split('.')[0]
    if module == 'utils' or is_script(trees[module]):
        return module
    return ALGORITHM


def tier(module: str, trees: Dict[str, ast.Module], tiers: List[Set[str]] = TIERS) -> int:
    """A module's tier, lowest 0; the scripts are above every tier. A folder missing from `tiers` is refused:
    a new folder takes its place in the table on purpose."""
    if '.' not in module and module in trees and is_script(trees[module]):
        return len(tiers)
    where = group(module, trees)
    for level, names in enumerate(tiers):
        if where in names:
            return level
    raise AssertionError(f'{where} is in no tier of TIERS: add it where its imports put it')


def layering_faults(trees: Dict[str, ast.Module], tiers: List[Set[str]] = TIERS) -> List[str]:
    """Each import up a tier, and each import of a script by a module that is not one, as 'a -> b'."""
    found = []
    for name, tree in trees.items():
        for imported in sorted(top_level_imports(tree, set(trees)) | _imports_in_functions(tree, set(trees))):
            if tier(imported, trees, tiers) == len(tiers) and tier(name, trees, tiers) < len(tiers):
                found.append(f'{name} -> {imported} (a script)')
            elif tier(imported, trees, tiers) > tier(name, trees, tiers):
                found.append(f'{name} -> {imported} (up a tier)')
    return sorted(found)


def _imports_in_functions(tree: ast.Module, modules: Set[str]) -> Set[str]:
    """What a module imports anywhere, functions included: an import deferred to a function still points up."""
    statements = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    return set(_bindings(statements, modules).values())


def folder_graph(trees: Dict[str, ast.Module]) -> Dict[str, Set[str]]:
    """folder -> the folders its modules import (the algorithm at the root counts as one; scripts left out)."""
    graph: Dict[str, Set[str]] = {}
    for name, tree in trees.items():
        if tier(name, trees) == len(TIERS):
            continue
        here = group(name, trees)
        graph.setdefault(here, set()).update(
            group(m, trees) for m in top_level_imports(tree, set(trees)) | _imports_in_functions(tree, set(trees))
            if group(m, trees) != here and tier(m, trees) < len(TIERS))
    return graph


def badly_named_packages(root: str = ROOT) -> List[str]:
    """Folders of code that are not regular packages, or that take the name of a standard-library module, an
    installed package, a root script or module, or a RESERVED folder."""
    installed = set(importlib.metadata.packages_distributions())
    root_modules = {name[:-3] for name in os.listdir(root) if name.endswith('.py')}
    found = []
    for package in packages(root):
        if not os.path.isfile(os.path.join(root, package, '__init__.py')):
            found.append(f'{package}: no __init__.py')
        if package in sys.stdlib_module_names or package in installed:
            found.append(f'{package}: taken by the standard library or an installed package')
        if package in root_modules or package in RESERVED:
            found.append(f'{package}: taken by a root module or a folder the docs name')
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
                    **{'cli.arguments': 'def check(args):\n    pass\n'})
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


def test_the_root_holds_the_scripts_and_the_algorithm_and_the_machinery_sits_in_folders_by_tier():
    trees = parse_modules()
    assert layering_faults(trees) == []
    assert import_cycle(folder_graph(trees)) == []
    assert {'runtime', 'inputs', 'stats', 'search', 'speed', 'cli'} <= set(folder_graph(trees))
    assert {m for m in trees if '.' not in m and group(m, trees) == ALGORITHM} >= {
        'operations', 'genotypes', 'model', 'model_search', 'architect_evolution', 'search_space', 'engine',
        'fitness'}
    assert 'genotypes' in trees  # the legacy genotype unpickler matches genotypes.Genotype

    trees = planted(**{'utils': '', 'runtime': '', 'runtime.files': 'import model\n',
                       'model': 'from runtime import files\n',
                       'cli': '', 'cli.flags': 'from runtime.files import x\n',
                       'report': "import model\nif __name__ == '__main__':\n    pass\n",
                       'stats': '', 'stats.table': 'def f():\n    import report\n',
                       'inputs': '', 'inputs.images': 'from cli import flags\n'})
    assert layering_faults(trees) == ['inputs.images -> cli.flags (up a tier)', 'runtime.files -> model (up a tier)',
                                      'stats.table -> report (a script)']
    assert import_cycle(folder_graph(trees)) == [ALGORITHM, 'runtime', ALGORITHM]
    assert import_cycle(folder_graph(planted(**{'utils': '', 'runtime': '', 'runtime.a': 'from inputs import b\n',
                                                  'inputs': '', 'inputs.b': 'from runtime import a\n'}))) == \
        ['inputs', 'runtime', 'inputs']


def test_the_folders_are_regular_packages_with_names_of_their_own(tmp_path):
    assert packages() and badly_named_packages() == []
    for name, files in {'runtime': ['__init__.py', 'a.py'], 'loose': ['a.py'], 'statistics': ['__init__.py'],
                        'numpy': ['__init__.py'], 'data': ['__init__.py'], 'train': ['__init__.py'],
                        'docs': ['notes.md']}.items():
        (tmp_path / name).mkdir()
        for f in files:
            (tmp_path / name / f).write_text('')
    (tmp_path / 'train.py').write_text('')
    assert badly_named_packages(str(tmp_path)) == [
        'data: taken by a root module or a folder the docs name',
        'loose: no __init__.py',
        'numpy: taken by the standard library or an installed package',
        'statistics: taken by the standard library or an installed package',
        'train: taken by a root module or a folder the docs name']
