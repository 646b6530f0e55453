"""A report of a search run, from its own records: fitness and diversity per generation, the operations the
final population chose, the best cell, its diagram and its cost.

Examples:
    python report.py search-EXP          # writes search-EXP/report.md (and PNG plots when matplotlib is installed)

train_search.py writes it at the end of every search. Plotting needs matplotlib (`pip install matplotlib`);
without it the Markdown summary is still written, with tables in place of the plots.
"""
import argparse
import glob
import json
import os
import shlex
import sys
from collections import Counter
from typing import Dict, List

import utils
from checkpoint import atomic_write_text
from cost import describe_cost, network_cost
from genotypes import PRIMITIVES, genotype_from_dict, load_genotype
from visualize import cell_text, draw


def _pct(value) -> str:
    return 'n/a' if value is None else f"{value:.2f}"


def read_records(run_dir: str) -> List[Dict]:
    paths = sorted(glob.glob(os.path.join(run_dir, 'generations', 'gen_*.json')))
    if not paths:
        raise utils.UserError(f"{run_dir} holds no generations/gen_*.json: not a search run directory, or no "
                              f"generation has completed yet")
    records = []
    for path in paths:
        try:
            with open(path) as f:
                records.append(json.load(f))
        except (OSError, ValueError) as e:
            raise utils.UserError(f"cannot read {path}: {utils.reason(e)}") from None
    return records


def operation_counts(record: Dict) -> Dict[str, Counter]:
    """How often each operation appears in the decoded cells of a generation's individuals."""
    counts = {'normal': Counter(), 'reduce': Counter()}
    for individual in record['population']:
        genotype = genotype_from_dict(individual['genotype'])
        counts['normal'].update(op for op, _ in genotype.normal)
        counts['reduce'].update(op for op, _ in genotype.reduce)
    return counts


def _plots(run_dir: str, records: List[Dict], ops: Dict[str, Counter]) -> List[str]:
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return []
    generations = [r['generation'] for r in records]
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (('best', '-'), ('mean', '--'), ('worst', ':')):
        ax.plot(generations, [float('nan') if r[key] is None else r[key] for r in records], style, label=key)
    ax.set_xlabel('generation')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # generations are whole numbers
    ax.set_ylabel('fitness (top-1 %, held-out half)')
    ax.legend()
    ax.grid(alpha=.3)
    written.append(_save(fig, os.path.join(run_dir, 'fitness.png')))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(generations, [r['distinct_genotypes'] for r in records], '-o')
    ax.set_xlabel('generation')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel('distinct genotypes')
    ax.set_ylim(bottom=0)
    ax.grid(alpha=.3)
    written.append(_save(fig, os.path.join(run_dir, 'diversity.png')))

    names = [p for p in PRIMITIVES if p != 'none']
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.4
    for offset, cell in ((-width / 2, 'normal'), (width / 2, 'reduce')):
        ax.bar([i + offset for i in range(len(names))], [ops[cell][n] for n in names], width, label=cell)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha='right')
    ax.set_ylabel('times chosen in the final population')
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, os.path.join(run_dir, 'operations.png')))
    return written


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)
    return path


def train_command(run_dir: str, args: Dict) -> str:
    """The train.py command for a search's result, with the data flags the search ran with (its args.json)
    and the paper's training recipe (auxiliary tower, cutout)."""
    words = ['python', 'train.py', '--dir', run_dir]
    if args.get('dataset', 'cifar10') != 'cifar10':
        words += ['--dataset', args['dataset']]
    if args.get('dataset') != 'synthetic' and args.get('data', '../data') != '../data':
        words += ['--data', args['data']]
    if args.get('dataset') == 'synthetic':
        words += ['--synthetic_size', str(args.get('synthetic_size'))]
    if args.get('image_size', 32) != 32:
        words += ['--image_size', str(args['image_size'])]
    if args.get('no_flip'):
        words += ['--no_flip']
    if args.get('crop_padding', 4) != 4:
        words += ['--crop_padding', str(args['crop_padding'])]
    if args.get('cutout_length', 16) != 16:
        words += ['--cutout_length', str(args['cutout_length'])]
    return ' '.join(shlex.quote(w) for w in words + ['--auxiliary', '--cutout'])


def write_report(run_dir: str) -> Dict:
    """Write RUN_DIR/report.md (and plots); returns the numbers it reports."""
    records = read_records(run_dir)
    last = records[-1]
    genotype_path = os.path.join(run_dir, 'genotype.json')
    best = load_genotype(genotype_path) if os.path.exists(genotype_path) else \
        genotype_from_dict(last['population'][0]['genotype'])
    ops = operation_counts(last)
    plots = _plots(run_dir, records, ops)
    diagram = draw(best, run_dir, 'genotype')
    with open(os.path.join(run_dir, 'args.json')) as f:
        args = json.load(f)
    info_path = os.path.join(run_dir, 'dataset.json')
    num_classes = json.load(open(info_path))['num_classes'] if os.path.exists(info_path) else 10
    costs = {'cifar': network_cost(best, 'cifar10', num_classes=num_classes),
             'imagenet': network_cost(best, 'imagenet')}

    lines = [f"# EvNAS search report: {os.path.basename(os.path.abspath(run_dir))}", '',
             f"{len(records)} of {args.get('epochs')} generations, population {args.get('pop_size')}, dataset "
             f"{args.get('dataset')}, supernet C={args.get('init_channels')} with {args.get('layers')} layers.", '',
             f"Best fitness of the last generation: **{_pct(last['best'])} %** (top-1 on the held-out half).", '']
    if plots:
        lines += [f"![{os.path.splitext(os.path.basename(p))[0]}]({os.path.basename(p)})" for p in plots] + ['']
    lines += ['## Per generation', '', '| generation | best | mean | worst | distinct genotypes |',
              '| ---: | ---: | ---: | ---: | ---: |']
    lines += [f"| {r['generation']} | {_pct(r['best'])} | {_pct(r['mean'])} | {_pct(r['worst'])} | "
              f"{r['distinct_genotypes']} / {len(r['population'])} |" for r in records]
    lines += ['', '## Operations chosen in the final population', '', '| operation | normal | reduction |',
              '| --- | ---: | ---: |']
    lines += [f"| {name} | {ops['normal'][name]} | {ops['reduce'][name]} |" for name in PRIMITIVES if name != 'none']
    images = [os.path.basename(p) for p in diagram['written'] if p.endswith('.png')]
    lines += ['', '## Best architecture', '', '```', cell_text(best.normal, best.normal_concat, 'normal cell')
              + cell_text(best.reduce, best.reduce_concat, 'reduction cell') + '```', '']
    lines += [f"![{name}]({name})" for name in images] or \
        ['Diagrams: `genotype_normal.dot`, `genotype_reduction.dot` (install Graphviz to render them).']
    lines += ['', '## Cost', '', f"- {describe_cost(costs['cifar'], 'CIFAR (C=36, 20 layers)')}",
              f"- {describe_cost(costs['imagenet'], 'ImageNet (C=48, 14 layers)')}", '',
              f"Train it: `{train_command(run_dir, args)}`", '']
    atomic_write_text(os.path.join(run_dir, 'report.md'), '\n'.join(lines))
    return {'records': records, 'operations': ops, 'plots': plots, 'costs': costs, 'genotype': best,
            'train_command': train_command(run_dir, args)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = utils.ArgumentParser('report', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('run_dir', help='a train_search.py run directory')
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> Dict:
    result = write_report(args.run_dir)
    print(f"wrote {os.path.join(args.run_dir, 'report.md')}" + (f" and {len(result['plots'])} plots" if result['plots']
                                                                  else ' (install matplotlib for the plots)'))
    return result


if __name__ == '__main__':
    sys.exit(utils.run_main(main, parse_args()))
