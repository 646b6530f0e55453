"""Draw the normal and reduction cells of a genotype, as DARTS does.

Examples:
    python visualize.py EvNASA                          # a published architecture
    python visualize.py search-EXP/genotype.json        # a genotype file
    python visualize.py search-EXP                      # the result of a search run
    python visualize.py EvNASA --out figures --format pdf

Writes OUT/NAME_normal.dot and OUT/NAME_reduction.dot (Graphviz source) and OUT/NAME.txt (a text rendering);
when Graphviz's `dot` program is installed, also OUT/NAME_normal.png and OUT/NAME_reduction.png.
"""
import argparse
import os
import shutil
import subprocess
import sys
from typing import Dict, List

import utils
from checkpoint import atomic_write_text
from genotypes import ARCHITECTURES, Genotype, get_genotype, load_genotype, resolve_genotype

INPUT_NAMES = ('c_{k-2}', 'c_{k-1}')


def _node(index: int) -> str:
    return INPUT_NAMES[index] if index < 2 else str(index - 2)


def cell_dot(edges, concat, title: str) -> str:
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


def cell_text(edges, concat, title: str) -> str:
    lines = [f"{title} (output: concat of {', '.join(_node(i) for i in concat)})"]
    for i in range(len(edges) // 2):
        (op1, in1), (op2, in2) = edges[2 * i], edges[2 * i + 1]
        lines.append(f"  node {i} = {op1}({_node(in1)}) + {op2}({_node(in2)})")
    return '\n'.join(lines) + '\n'


def draw(genotype: Genotype, out_dir: str, name: str, image_format: str = 'png') -> Dict[str, List[str]]:
    """Write the .dot sources and the text rendering, and render images when `dot` is installed.
    Returns {'written': [paths], 'missing': [what could not be made and why]}."""
    os.makedirs(out_dir, exist_ok=True)
    written, missing = [], []
    text = []
    dot = shutil.which('dot')
    for cell, edges, concat in (('normal', genotype.normal, genotype.normal_concat),
                                ('reduction', genotype.reduce, genotype.reduce_concat)):
        source_path = os.path.join(out_dir, f"{name}_{cell}.dot")
        atomic_write_text(source_path, cell_dot(edges, concat, f"{name}: {cell} cell"))
        written.append(source_path)
        text.append(cell_text(edges, concat, f"{cell} cell"))
        if dot is None:
            missing.append(f"{name}_{cell}.{image_format}: Graphviz's `dot` is not installed (e.g. `apt-get install "
                           f"graphviz` or `conda install graphviz`), then: dot -T{image_format} {source_path} -o "
                           f"{os.path.join(out_dir, f'{name}_{cell}.{image_format}')}")
            continue
        image_path = os.path.join(out_dir, f"{name}_{cell}.{image_format}")
        done = subprocess.run([dot, f'-T{image_format}', source_path, '-o', image_path], capture_output=True, text=True)
        if done.returncode == 0:
            written.append(image_path)
        else:
            missing.append(f"{image_path}: dot failed ({done.stderr.strip()[:200]})")
    text_path = os.path.join(out_dir, f"{name}.txt")
    atomic_write_text(text_path, f"{name}\n" + '\n'.join(text))
    written.append(text_path)
    return {'written': written, 'missing': missing}


def parse_args(argv=None) -> argparse.Namespace:
    parser = utils.ArgumentParser('visualize', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('genotype', help=f"an architecture name ({', '.join(ARCHITECTURES)}), a genotype JSON file, "
                                         f"or a search run directory")
    parser.add_argument('--out', type=str, default=None,
                        help='output directory (default: the run directory for a run, else the current directory)')
    parser.add_argument('--name', type=str, default=None, help='file name stem (default: from the input)')
    parser.add_argument('--format', choices=('png', 'pdf', 'svg'), default='png', help='image format (default: png)')
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> Dict[str, List[str]]:
    source = args.genotype
    if os.path.isdir(source):
        genotype, _ = resolve_genotype(search_dir=source)
        out_dir, name = args.out or source, args.name or 'genotype'
    elif os.path.isfile(source):
        genotype = load_genotype(source)
        out_dir, name = args.out or '.', args.name or os.path.splitext(os.path.basename(source))[0]
    else:
        genotype = get_genotype(source)
        out_dir, name = args.out or '.', args.name or source
    result = draw(genotype, out_dir, name, args.format)
    for path in result['written']:
        print(f"wrote {path}")
    for line in result['missing']:
        print(f"not drawn: {line}")
    return result


if __name__ == '__main__':
    sys.exit(utils.run_main(main, parse_args()))
