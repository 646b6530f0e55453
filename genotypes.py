"""Cell genotypes: the DARTS search space, the published architectures, and safe (de)serialisation.

A genotype lists, for each intermediate node of a cell, two (operation, input) pairs; inputs 0 and 1
are the two previous cells' outputs, input k >= 2 is node k - 2 of the same cell.
"""
import io
import json
import os
import pickle
from collections import namedtuple
from typing import Any, Dict, Optional, Tuple

from utils import UserError

Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')

# The order matters: it is the column order of the architecture weights (alphas) of the supernet.
PRIMITIVES = [
    'none',
    'max_pool_3x3',
    'avg_pool_3x3',
    'skip_connect',
    'sep_conv_3x3',
    'sep_conv_5x5',
    'dil_conv_3x3',
    'dil_conv_5x5',
]
NONE_INDEX = PRIMITIVES.index('none')  # the supernet's `none` op; decoding never keeps it

# Every operation a genotype may name (operations.OPS builds each): the search space's and those of the
# published non-EvNAS cells.
OPERATIONS = PRIMITIVES + ['sep_conv_7x7', 'conv_7x1_1x7']


def num_edges(steps: int) -> int:
    """Edges of a cell with `steps` intermediate nodes: node i has 2 + i inputs (14 for DARTS's 4 nodes)."""
    return sum(2 + i for i in range(steps))


def num_steps(edges: int) -> int:
    """The intermediate nodes of a cell with `edges` edges (the inverse of num_edges)."""
    steps = 0
    while num_edges(steps) < edges:
        steps += 1
    if num_edges(steps) != edges:
        raise ValueError(f"{edges} rows do not form a cell (expected 2, 5, 9, 14, 20, ... rows)")
    return steps

NASNet = Genotype(
    normal=[
        ('sep_conv_5x5', 1), ('sep_conv_3x3', 0),
        ('sep_conv_5x5', 0), ('sep_conv_3x3', 0),
        ('avg_pool_3x3', 1), ('skip_connect', 0),
        ('avg_pool_3x3', 0), ('avg_pool_3x3', 0),
        ('sep_conv_3x3', 1), ('skip_connect', 1),
    ],
    normal_concat=[2, 3, 4, 5, 6],
    reduce=[
        ('sep_conv_5x5', 1), ('sep_conv_7x7', 0),
        ('max_pool_3x3', 1), ('sep_conv_7x7', 0),
        ('avg_pool_3x3', 1), ('sep_conv_5x5', 0),
        ('skip_connect', 3), ('avg_pool_3x3', 2),
        ('sep_conv_3x3', 2), ('max_pool_3x3', 1),
    ],
    reduce_concat=[4, 5, 6],
)

AmoebaNet = Genotype(
    normal=[
        ('avg_pool_3x3', 0), ('max_pool_3x3', 1),
        ('sep_conv_3x3', 0), ('sep_conv_5x5', 2),
        ('sep_conv_3x3', 0), ('avg_pool_3x3', 3),
        ('sep_conv_3x3', 1), ('skip_connect', 1),
        ('skip_connect', 0), ('avg_pool_3x3', 1),
    ],
    normal_concat=[4, 5, 6],
    reduce=[
        ('avg_pool_3x3', 0), ('sep_conv_3x3', 1),
        ('max_pool_3x3', 0), ('sep_conv_7x7', 2),
        ('sep_conv_7x7', 0), ('avg_pool_3x3', 1),
        ('max_pool_3x3', 0), ('max_pool_3x3', 1),
        ('conv_7x1_1x7', 0), ('sep_conv_3x3', 5),
    ],
    reduce_concat=[3, 4, 6],
)

DARTS_V1 = Genotype(
    normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1),
            ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)],
    reduce_concat=[2, 3, 4, 5],
)

DARTS_V2 = Genotype(
    normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)],
    reduce_concat=[2, 3, 4, 5],
)

DARTS = DARTS_V2

# The three cells of the EvNAS paper (Sinha & Chen, 2021, Fig. 3 and Tables 1-3). The edge order is the
# order the search wrote them in; the evaluation network builds its ops in this order, so it fixes the
# state_dict keys of the published weights.
EvNASA = Genotype(
    normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_5x5', 2), ('sep_conv_3x3', 1),
            ('skip_connect', 0), ('skip_connect', 2), ('dil_conv_5x5', 3), ('sep_conv_3x3', 1)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('dil_conv_5x5', 1), ('avg_pool_3x3', 0), ('sep_conv_3x3', 0), ('avg_pool_3x3', 2),
            ('skip_connect', 1), ('skip_connect', 2), ('skip_connect', 1), ('sep_conv_5x5', 0)],
    reduce_concat=[2, 3, 4, 5],
)

EvNASB = Genotype(
    normal=[('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('sep_conv_5x5', 2), ('max_pool_3x3', 0),
            ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_5x5', 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('skip_connect', 1), ('max_pool_3x3', 0), ('max_pool_3x3', 0), ('avg_pool_3x3', 1),
            ('skip_connect', 2), ('avg_pool_3x3', 3), ('sep_conv_5x5', 2), ('sep_conv_5x5', 0)],
    reduce_concat=[2, 3, 4, 5],
)

EvNASC = Genotype(
    normal=[('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 2), ('sep_conv_5x5', 1),
            ('max_pool_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 0), ('sep_conv_5x5', 3)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('sep_conv_5x5', 1), ('dil_conv_3x3', 0), ('sep_conv_5x5', 0), ('skip_connect', 1),
            ('max_pool_3x3', 0), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('max_pool_3x3', 2)],
    reduce_concat=[2, 3, 4, 5],
)

ARCHITECTURES: Dict[str, Genotype] = {
    'NASNet': NASNet,
    'AmoebaNet': AmoebaNet,
    'DARTS_V1': DARTS_V1,
    'DARTS_V2': DARTS_V2,
    'DARTS': DARTS,
    'EvNASA': EvNASA,
    'EvNASB': EvNASB,
    'EvNASC': EvNASC,
}


class GenotypeError(UserError, ValueError):
    """A genotype name, file or structure that cannot be used."""


def get_genotype(name: str) -> Genotype:
    """Look up a published genotype by name (replaces the original's `eval("genotypes.%s" % name)`)."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ', '.join(ARCHITECTURES)
        raise GenotypeError(f"unknown architecture '{name}'; known architectures: {known}") from None


def validate_genotype(genotype: Genotype) -> Genotype:
    """Check that a genotype describes buildable cells; return it with plain lists, tuples and ints."""
    cells = {}
    for cell in ('normal', 'reduce'):
        edges, concat = getattr(genotype, cell), getattr(genotype, cell + '_concat')
        try:
            edges = [(str(op), int(index)) for op, index in edges]
            concat = [int(i) for i in concat]
        except (TypeError, ValueError):
            raise GenotypeError(f"{cell} cell: edges must be (operation, input) pairs and concat a list of "
                                f"node indices") from None
        if not edges or len(edges) % 2:
            raise GenotypeError(f"{cell} cell: needs two edges per node, got {len(edges)} edges")
        steps = len(edges) // 2
        for position, (op, index) in enumerate(edges):
            if op not in OPERATIONS:
                raise GenotypeError(f"{cell} cell: unknown operation '{op}' (known: {', '.join(OPERATIONS)})")
            node = position // 2
            if not 0 <= index < node + 2:
                raise GenotypeError(f"{cell} cell: node {node} cannot take input {index} "
                                    f"(valid inputs: 0..{node + 1})")
        if not concat or any(not 0 <= i < steps + 2 for i in concat):
            raise GenotypeError(f"{cell} cell: concat {concat} must name nodes in 0..{steps + 1}")
        cells[cell], cells[cell + '_concat'] = edges, concat
    return Genotype(**cells)


def genotype_to_dict(genotype: Genotype) -> Dict[str, Any]:
    return {
        'normal': [[op, index] for op, index in genotype.normal],
        'normal_concat': list(genotype.normal_concat),
        'reduce': [[op, index] for op, index in genotype.reduce],
        'reduce_concat': list(genotype.reduce_concat),
    }


def genotype_from_dict(data: Dict[str, Any]) -> Genotype:
    if isinstance(data, dict) and 'arch' in data:
        raise GenotypeError(f"{data['arch']} is a NAS-Bench-201 architecture (train_search.py --space nb201), not a "
                            f"DARTS-space genotype: the training and test scripts build DARTS networks; its trained "
                            f"accuracy is the benchmark's (search with --api_path, or look it up in NAS-Bench-201)")
    if not isinstance(data, dict) or any(key not in data for key in Genotype._fields):
        raise GenotypeError(f"a genotype needs the keys {', '.join(Genotype._fields)}")
    return validate_genotype(Genotype(**{key: data[key] for key in Genotype._fields}))


def save_genotype(genotype: Genotype, path: str) -> None:
    """Write a genotype as JSON, atomically (a reader never sees half a file)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, 'w') as f:
        json.dump(genotype_to_dict(genotype), f, indent=1)
        f.write('\n')
    os.replace(tmp, path)


def load_genotype(path: str) -> Genotype:
    """Read a genotype from `genotype.json`, or from a legacy `genotype.pickle` of the original search."""
    if os.path.isdir(path):
        raise GenotypeError(f"{path} is a directory, not a genotype file (a search run directory is given with "
                            f"--dir)")
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as e:
        raise GenotypeError(f"cannot read genotype file {path}: {e.strerror}") from None
    if path.endswith('.pickle') or path.endswith('.pkl'):
        return _load_legacy_pickle(raw, path)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenotypeError(f"{path} is not valid JSON: {e}") from None
    try:
        return genotype_from_dict(data)
    except GenotypeError as e:
        raise GenotypeError(f"{path}: {e}") from None


class _GenotypeUnpickler(pickle.Unpickler):
    """Admits the genotype namedtuple and plain containers; any other global (os.system, ...) is refused."""

    ALLOWED = {('genotypes', 'Genotype'), ('builtins', 'range'), ('__builtin__', 'range')}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return Genotype if name == 'Genotype' else range
        raise pickle.UnpicklingError(f"refusing to load '{module}.{name}'")


def _load_legacy_pickle(raw: bytes, path: str) -> Genotype:
    try:
        obj = _GenotypeUnpickler(io.BytesIO(raw)).load()
    except Exception as e:  # a damaged or hostile pickle can raise almost anything; none of it runs code
        raise GenotypeError(f"{path} is not a genotype pickle of the original EvNAS search: {e}") from None
    if not isinstance(obj, Genotype):
        raise GenotypeError(f"{path} holds a {type(obj).__name__}, not a Genotype")
    try:
        return validate_genotype(obj)
    except GenotypeError as e:
        raise GenotypeError(f"{path}: {e}") from None


def resolve_genotype(arch: Optional[str] = None, genotype_file: Optional[str] = None,
                     search_dir: Optional[str] = None) -> Tuple[Genotype, str]:
    """The genotype a script is asked for, and a name for it: --genotype FILE, --dir SEARCH_DIR (its
    genotype.json, or the original search's genotype.pickle), or --arch NAME, in that order."""
    if genotype_file is not None:
        return load_genotype(genotype_file), genotype_file
    if search_dir is not None:
        for name in ('genotype.json', 'genotype.pickle'):
            path = os.path.join(search_dir, name)
            if os.path.exists(path):
                return load_genotype(path), path
        raise GenotypeError(f"{search_dir} holds neither genotype.json nor genotype.pickle (is it a search run "
                            f"directory that finished?)")
    if arch is None:
        raise GenotypeError("no architecture given: use --arch NAME, --genotype FILE or --dir SEARCH_DIR")
    return get_genotype(arch), arch


