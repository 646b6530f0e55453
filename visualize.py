"""Draw the normal and reduction cells of a genotype, as DARTS does, or the cell of a NAS-Bench-201
architecture.

Examples:
    python visualize.py EvNASA                          # a published architecture
    python visualize.py search-EXP/genotype.json        # a genotype file
    python visualize.py search-EXP                      # the result of a search run (either space)
    python visualize.py EvNASA --out figures --format pdf
    python visualize.py \\
        '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'

Writes OUT/NAME_normal.dot and OUT/NAME_reduction.dot (Graphviz source; OUT/NAME_cell.dot for NAS-Bench-201)
and OUT/NAME.txt (a text rendering); when Graphviz's `dot` program is installed, also the images
(OUT/NAME_normal.png, OUT/NAME_reduction.png; OUT/NAME_cell.png).
"""
import argparse
import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from cli import arguments
from genotypes import ARCHITECTURES, Genotype, get_genotype, load_genotype, resolve_genotype
from genotypes_nb201 import edge_names, load_arch, max_nodes_of, parse_arch
from runtime import stopping
from runtime.checkpoint import atomic_write_text

INPUT_NAMES = ('c_{k-2}', 'c_{k-1}')


def _node(index: int) -> str:
    return INPUT_NAMES[index] if index < 2 else str(index - 2)


def cell_dot(edges: Sequence[Tuple[str, int]], concat: Sequence[int], title: str) -> str:
    """Graphviz source of one cell: inputs c_{k-2} and c_{k-1}, intermediate nodes 0.., output c_{k}."""
    lines = [
        'digraph cell {',
        f'  label="{title}"; labelloc=t; rankdir=LR;',
        '  edge [fontsize=20, fontname="helvetica"];',
        '  node [style=filled, shape=rect, align=center, fontsize=20, height=0.5, width=0.5, penwidth=2, '
        'fontname="helvetica"];',
    ]
    for name in INPUT_NAMES:
        lines.append(f'  "{name}" [fillcolor=darkseagreen2];')
    steps = len(edges) // 2
    for i in range(steps):
        lines.append(f'  "{i}" [fillcolor=lightblue];')
    for position, (op, index) in enumerate(edges):
        lines.append(f'  "{_node(index)}" -> "{position // 2}" [label="{op}", fillcolor=gray];')
    lines.append('  "c_{k}" [fillcolor=palegoldenrod];')
    for index in concat:
        lines.append(f'  "{_node(index)}" -> "c_{{k}}" [fillcolor=gray];')
    lines.append('}')
    return '\n'.join(lines) + '\n'


def cell_text(edges: Sequence[Tuple[str, int]], concat: Sequence[int], title: str) -> str:
    lines = [f"{title} (output: concat of {', '.join(_node(i) for i in concat)})"]
    for i in range(len(edges) // 2):
        (op1, in1), (op2, in2) = edges[2 * i], edges[2 * i + 1]
        lines.append(f"  node {i} = {op1}({_node(in1)}) + {op2}({_node(in2)})")
    return '\n'.join(lines) + '\n'


def nb201_cell_dot(arch: str, title: str) -> str:
    """Graphviz source of a NAS-Bench-201 cell: node 0 (the input) to the last node (the output); an edge
    whose operation is `none` is no connection and is not drawn."""
    ops = parse_arch(arch)
    nodes = max_nodes_of(len(ops))
    lines = ['digraph cell {', f'  label="{title}"; labelloc=t; rankdir=LR;',
             '  edge [fontsize=20, fontname="helvetica"];',
             '  node [style=filled, shape=circle, fontsize=20, penwidth=2, fontname="helvetica"];']
    for i in range(nodes):
        colour = 'darkseagreen2' if i == 0 else 'palegoldenrod' if i == nodes - 1 else 'lightblue'
        lines.append(f'  "{i}" [fillcolor={colour}];')
    for name, op in zip(edge_names(nodes), ops):
        target, source = name.split('<-')
        if op != 'none':
            lines.append(f'  "{source}" -> "{target}" [label="{op}"];')
    lines.append('}')
    return '\n'.join(lines) + '\n'


def nb201_cell_text(arch: str) -> str:
    ops = parse_arch(arch)
    nodes = max_nodes_of(len(ops))
    op_of = dict(zip(edge_names(nodes), ops))
    lines = [f"NAS-Bench-201 cell {arch} (node 0: the input, node {nodes - 1}: the output)"]
    for i in range(1, nodes):
        terms = [f"{op_of[f'{i}<-{j}']}({j})" for j in range(i) if op_of[f'{i}<-{j}'] != 'none']
        lines.append(f"  node {i} = {' + '.join(terms) if terms else '0 (every input is none)'}")
    return '\n'.join(lines) + '\n'


def _render(sources, text: str, out_dir: str, name: str, image_format: str) -> Dict[str, List[str]]:
    """Write each (file stem, Graphviz source) and the text rendering, and render images when `dot` is
    installed. Returns {'written': [paths], 'missing': [what could not be made and why]}."""
    os.makedirs(out_dir, exist_ok=True)
    written, missing = [], []
    dot = shutil.which('dot')
    for stem, source in sources:
        source_path = os.path.join(out_dir, f"{stem}.dot")
        atomic_write_text(source_path, source)
        written.append(source_path)
        image_path = os.path.join(out_dir, f"{stem}.{image_format}")
        if dot is None:
            missing.append(f"{stem}.{image_format}: Graphviz's `dot` is not installed (e.g. `apt-get install "
                           f"graphviz` or `conda install graphviz`), then: dot -T{image_format} {source_path} -o "
                           f"{image_path}")
            continue
        done = subprocess.run([dot, f'-T{image_format}', source_path, '-o', image_path], capture_output=True, text=True)
        if done.returncode == 0:
            written.append(image_path)
        else:
            missing.append(f"{image_path}: dot failed ({done.stderr.strip()[:200]})")
    text_path = os.path.join(out_dir, f"{name}.txt")
    atomic_write_text(text_path, f"{name}\n{text}")
    written.append(text_path)
    return {'written': written, 'missing': missing}


def draw(genotype: Genotype, out_dir: str, name: str, image_format: str = 'png') -> Dict[str, List[str]]:
    """The normal and reduction cells of a DARTS genotype: NAME_normal.dot, NAME_reduction.dot, NAME.txt."""
    cells = (('normal', genotype.normal, genotype.normal_concat),
             ('reduction', genotype.reduce, genotype.reduce_concat))
    return _render([(f"{name}_{cell}", cell_dot(edges, concat, f"{name}: {cell} cell"))
                    for cell, edges, concat in cells],
                   '\n'.join(cell_text(edges, concat, f"{cell} cell") for cell, edges, concat in cells),
                   out_dir, name, image_format)


def draw_nb201(arch: str, out_dir: str, name: str, image_format: str = 'png') -> Dict[str, List[str]]:
    """The cell of a NAS-Bench-201 architecture string: NAME_cell.dot and NAME.txt."""
    return _render([(f"{name}_cell", nb201_cell_dot(arch, f"{name}: NAS-Bench-201 cell"))], nb201_cell_text(arch),
                   out_dir, name, image_format)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = arguments.ArgumentParser('visualize', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('genotype', help=f"an architecture name ({', '.join(ARCHITECTURES)}), a genotype JSON file, "
                                         f"a search run directory, or a NAS-Bench-201 arch string |op~0|+...")
    parser.add_argument('--out', type=str, default=None,
                        help='output directory (default: the run directory for a run, else the current directory)')
    parser.add_argument('--name', type=str, default=None, help='file name stem (default: from the input)')
    parser.add_argument('--format', choices=('png', 'pdf', 'svg'), default='png', help='image format (default: png)')
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> Dict[str, List[str]]:
    source = args.genotype
    arch = None  # a NAS-Bench-201 architecture, where the input is one
    if os.path.isdir(source):
        out_dir, name = args.out or source, args.name or 'genotype'
        arch = load_arch(os.path.join(source, 'genotype.json'))
        genotype = None if arch else resolve_genotype(search_dir=source)[0]
    elif os.path.isfile(source):
        out_dir, name = args.out or '.', args.name or os.path.splitext(os.path.basename(source))[0]
        arch = load_arch(source)
        genotype = None if arch else load_genotype(source)
    elif source.startswith('|'):
        parse_arch(source)  # one clear line for a malformed string
        arch, genotype = source, None
        out_dir, name = args.out or '.', args.name or 'nb201'
    else:
        genotype = get_genotype(source)
        out_dir, name = args.out or '.', args.name or source
    result = draw_nb201(arch, out_dir, name, args.format) if arch else draw(genotype, out_dir, name, args.format)
    for path in result['written']:
        print(f"wrote {path}")
    for line in result['missing']:
        print(f"not drawn: {line}")
    return result


if __name__ == '__main__':
    sys.exit(stopping.run_main(main, parse_args()))
