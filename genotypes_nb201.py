"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020), as the original EvNAS searches it.

A cell is a complete DAG on nodes 0..max_nodes-1: node 0 is the cell's input, node i sums one operation of
every earlier node j (edge `i<-j`), and the last node is the output. With 4 nodes there are 6 edges, in the
order of their sorted names: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2. An architecture is one operation per edge,
written as the benchmark writes it: `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` (node 1, node 2, node 3).
"""
import json
from typing import List, Optional, Sequence

from utils import UserError

# The order matters: it is the column order of the architecture weights (alphas) of the supernet.
NB201_OPS = ['none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3']


class ArchError(UserError, ValueError):
    """An architecture string that is not one of the NAS-Bench-201 space."""


def edge_names(max_nodes: int = 4) -> List[str]:
    """The edges `i<-j` in the order of the alpha rows: their names sorted as strings (AutoDL's edge2index)."""
    return sorted(f"{i}<-{j}" for i in range(1, max_nodes) for j in range(i))


def num_edges(max_nodes: int = 4) -> int:
    return max_nodes * (max_nodes - 1) // 2


def max_nodes_of(edges: int) -> int:
    """The node count of a cell with `edges` edges (the inverse of num_edges)."""
    nodes = 2
    while num_edges(nodes) < edges:
        nodes += 1
    if num_edges(nodes) != edges:
        raise ValueError(f"{edges} rows do not form a NAS-Bench-201 cell (expected 1, 3, 6, 10, ... rows)")
    return nodes


def arch_string(ops_by_edge: Sequence[str], max_nodes: int = 4) -> str:
    """The benchmark's string of an architecture given as one operation per alpha row."""
    op_of = dict(zip(edge_names(max_nodes), ops_by_edge, strict=True))
    return '+'.join('|' + '|'.join(f"{op_of[f'{i}<-{j}']}~{j}" for j in range(i)) + '|'
                    for i in range(1, max_nodes))


def parse_arch(text: str) -> List[str]:
    """The operation of every alpha row of an architecture string (the inverse of arch_string)."""
    nodes = text.strip().split('+')
    ops = {}
    for i, node in enumerate(nodes, start=1):
        if not (node.startswith('|') and node.endswith('|')):
            raise ArchError(f"'{text}' is not a NAS-Bench-201 architecture: node {i} is not written as |op~j|...|")
        inputs = node[1:-1].split('|')
        if len(inputs) != i:
            raise ArchError(f"'{text}' is not a NAS-Bench-201 architecture: node {i} has {len(inputs)} inputs, "
                            f"expected {i}")
        for j, term in enumerate(inputs):
            op, _, source = term.partition('~')
            if op not in NB201_OPS or source != str(j):
                raise ArchError(f"'{text}' is not a NAS-Bench-201 architecture: '{term}' (expected op~{j} with op "
                                f"one of {', '.join(NB201_OPS)})")
            ops[f"{i}<-{j}"] = op
    return [ops[name] for name in edge_names(len(nodes) + 1)]


def load_arch(path: str) -> Optional[str]:
    """The NAS-Bench-201 architecture of a search's genotype.json ({"space": "nb201", "arch": ...}), or None
    when the file is not one (a DARTS genotype, or no file)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and 'arch' in data):
        return None
    if not isinstance(data['arch'], str):
        raise ArchError(f"{path}: 'arch' is not an architecture string")
    parse_arch(data['arch'])
    return data['arch']
