"""A report of a search run, from its own records: fitness and diversity per generation, the operations the
final population chose, the best cell, its diagram and its cost (DARTS space) or its true accuracy
(NAS-Bench-201 with --api_path: a curve of the true test accuracy of each generation's best).

Examples:
    python report.py search-EXP          # writes search-EXP/report.md (and PNG plots when matplotlib is installed)
    python report.py nb201-18 nb201-19 nb201-20    # each run's report, and the mean and spread over the runs

train_search.py writes it at the end of every search. Plotting needs matplotlib (`pip install matplotlib`);
without it the Markdown summary is still written, with tables in place of the plots.
"""
import argparse
import glob
import json
import os
import shlex
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence

import utils
from cli import arguments
from cost import describe_cost, network_cost
from genotypes import PRIMITIVES, genotype_from_dict, load_genotype
from genotypes_nb201 import NB201_OPS, load_arch, parse_arch
from runtime import stopping
from runtime.checkpoint import atomic_write_text
from search import latency, random_search
from search.budget import pareto_front
from visualize import cell_text, draw, draw_nb201, nb201_cell_text


@dataclass(frozen=True)
class RecordedSearch:
    """What a report reads of a search's args.json. A flag the run predates (absent from its args.json) takes
    its default here: for the data flags, the value every run had before the flag existed (train.py's default
    too); the sizes of the search (None) only appear in the report's header."""
    space: str = 'darts'
    strategy: str = 'evolution'
    dataset: str = 'cifar10'
    data: str = '../data'
    synthetic_size: Optional[int] = None
    image_size: int = 32
    no_flip: bool = False
    crop_padding: int = 4
    cutout_length: int = 16
    init_channels: Optional[int] = None
    layers: Optional[int] = None
    num_cells: Optional[int] = None
    epochs: Optional[int] = None
    pop_size: Optional[int] = None
    max_params: Optional[float] = None
    max_macs: Optional[float] = None
    budget_size: str = 'cifar'
    max_latency: Optional[float] = None

    @classmethod
    def from_args(cls, saved: Mapping[str, Any]) -> 'RecordedSearch':
        """From a search's args (args.json, or vars() of its namespace); the other flags are left out."""
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})

    @classmethod
    def read(cls, run_dir: str) -> 'RecordedSearch':
        path = os.path.join(run_dir, 'args.json')
        with open(path) as f:
            saved = json.load(f)
        if not isinstance(saved, dict):
            raise utils.UserError(f"{path} does not hold a search's arguments (a JSON object)")
        return cls.from_args(saved)


def _pct(value: Optional[float]) -> str:
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
    """How often each operation appears in the decoded cells of a generation's individuals: per cell
    (normal, reduce) in the DARTS space, over the six edges (cell) of a NAS-Bench-201 architecture."""
    if record['population'] and 'arch' in record['population'][0]:
        return {'cell': Counter(op for individual in record['population'] for op in parse_arch(individual['arch']))}
    counts = {'normal': Counter(), 'reduce': Counter()}
    for individual in record['population']:
        genotype = genotype_from_dict(individual['genotype'])
        counts['normal'].update(op for op, _ in genotype.normal)
        counts['reduce'].update(op for op, _ in genotype.reduce)
    return counts


def _point(individual: Dict, cost: str = 'macs') -> Dict[str, float]:
    """An individual of a record as a point of the fitness-cost plane (a NaN fitness: null in the record)."""
    return {'fitness': float('nan') if individual['fitness'] is None else individual['fitness'],
            cost: individual[cost]}


def _cost_axis(population: List[Dict]) -> str:
    """What the front trades fitness against: the predicted latency under a latency budget, else MACs."""
    return 'latency_ms' if population and 'latency_ms' in population[0] else 'macs'


def _latency_line(run_dir: str, architecture) -> Optional[str]:
    """The architecture's latency predicted from the run's copy of its table, where the search had one."""
    path = os.path.join(run_dir, latency.RUN_COPY)
    if not os.path.isfile(path):
        return None
    table = latency.LatencyTable.read(path)
    return (f"{table.predict(architecture):.2f} ms predicted for {table.network.describe()} by its latency table "
            f"({table.describe()})")


def _budget_lines(records: List[Dict], search: RecordedSearch) -> List[str]:
    """The budget section: the limits, and the non-dominated front of the final population (fitness against
    MACs, or against the predicted latency under a latency budget), best fitness first."""
    population = records[-1]['population']
    limits = ', '.join([f"{value:g} M {name}" for value, name in ((search.max_params, 'parameters'),
                                                                  (search.max_macs, 'MACs')) if value is not None]
                       + ([f"{search.max_latency:g} ms predicted latency"] if search.max_latency is not None else []))
    axis = _cost_axis(population)
    front = sorted(pareto_front([_point(p, axis) for p in population], axis),
                   key=lambda i: -_point(population[i])['fitness'])
    timed = 'latency_ms' in population[0]
    lines = ['', '## Budget', '', f"At most {limits} at the {search.budget_size} size; "
             f"{records[-1]['feasible']} of {len(population)} individuals of the last generation fit.", '',
             f"Non-dominated front of the last generation, fitness against {'latency' if timed else 'MACs'} (no other "
             f"individual is both fitter and {'faster' if timed else 'cheaper'}):", '',
             '| rank | fitness | parameters (M) | MACs (M) |' + (' latency (ms) |' if timed else '') + ' feasible |',
             '| ---: | ---: | ---: | ---: |' + (' ---: |' if timed else '') + ' --- |']
    lines += [f"| {population[i]['rank']} | {_pct(population[i]['fitness'])} | {population[i]['params'] / 1e6:.3f} | "
              f"{population[i]['macs'] / 1e6:.1f} |" + (f" {population[i]['latency_ms']:.2f} |" if timed else '')
              + f" {'yes' if population[i]['feasible'] else 'no'} |" for i in front]
    return lines


def _tau(value: Optional[float]) -> str:
    return 'n/a' if value is None else f"{value:.3f}"


def _true_accuracy(record: Dict, key: str) -> Optional[float]:
    """The benchmark's accuracy of a generation's best (NAS-Bench-201 with --api_path), or None."""
    return (record.get('benchmark') or {}).get(key)


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

    if any(_true_accuracy(r, 'test') is not None for r in records):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, style in (('test', '-o'), ('valid', '--')):
            ax.plot(generations, [float('nan') if _true_accuracy(r, key) is None else _true_accuracy(r, key)
                                  for r in records], style,
                    label=f"true {key} accuracy")
        ax.set_xlabel('generation')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("the best's accuracy in NAS-Bench-201 (%)")
        ax.legend()
        ax.grid(alpha=.3)
        written.append(_save(fig, os.path.join(run_dir, 'benchmark.png')))

    if any(r.get('benchmark_tau') is not None for r in records):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(generations, [float('nan') if r.get('benchmark_tau') is None else r['benchmark_tau'] for r in records],
                '-o')
        ax.axhline(0, color='grey', lw=.8)
        ax.set_xlabel('generation')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("Kendall tau: fitness vs NAS-Bench-201 test")
        ax.set_ylim(-1, 1)
        ax.grid(alpha=.3)
        written.append(_save(fig, os.path.join(run_dir, 'benchmark_tau.png')))

    population = records[-1]['population']
    if population and 'macs' in population[0]:
        axis = _cost_axis(population)
        scale = 1. if axis == 'latency_ms' else 1e-6
        front = set(pareto_front([_point(p, axis) for p in population], axis))
        fig, ax = plt.subplots(figsize=(6, 4))
        for feasible, marker, label in ((True, 'o', 'feasible'), (False, 'x', 'over budget')):
            chosen = [p for p in population if p['feasible'] == feasible]
            ax.scatter([p[axis] * scale for p in chosen], [_point(p)['fitness'] for p in chosen], marker=marker,
                       label=label)
        line = sorted((population[i] for i in front), key=lambda p: p[axis])
        ax.plot([p[axis] * scale for p in line], [p['fitness'] for p in line], '-', color='gray',
                label='non-dominated front')
        ax.set_xlabel('predicted latency (ms)' if axis == 'latency_ms' else 'multiply-accumulates (M)')
        ax.set_ylabel('fitness (top-1 %)')
        ax.legend()
        ax.grid(alpha=.3)
        written.append(_save(fig, os.path.join(run_dir, 'pareto.png')))

    names = _op_names(ops)
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(ops)
    for k, cell in enumerate(ops):
        offset = (k - (len(ops) - 1) / 2) * width
        ax.bar([i + offset for i in range(len(names))], [ops[cell][n] for n in names], width, label=cell)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha='right')
    ax.set_ylabel('times chosen in the final population')
    if len(ops) > 1:
        ax.legend()
    fig.tight_layout()
    written.append(_save(fig, os.path.join(run_dir, 'operations.png')))
    return written


def _op_names(ops: Dict[str, Counter]) -> List[str]:
    """The operations a table of counts lists: the DARTS primitives but `none` (never kept), or all five of
    NAS-Bench-201's (where `none` can win an edge)."""
    return list(NB201_OPS) if 'cell' in ops else [p for p in PRIMITIVES if p != 'none']


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)
    return path


def train_command(run_dir: str, search: RecordedSearch) -> str:
    """The train.py command for a search's result, with the data flags the search ran with and the paper's
    training recipe (auxiliary tower, cutout)."""
    words = ['python', 'train.py', '--dir', run_dir] + search_data_flags(search)
    return ' '.join(shlex.quote(w) for w in words + ['--auxiliary', '--cutout'])


def search_data_flags(search: RecordedSearch) -> List[str]:
    """train.py's flags for the images a search ran on, where they differ from train.py's defaults."""
    words = []
    if search.dataset != 'cifar10':
        words += ['--dataset', search.dataset]
    if search.dataset != 'synthetic' and search.data != '../data':
        words += ['--data', search.data]
    if search.dataset == 'synthetic':
        words += ['--synthetic_size', str(search.synthetic_size)]
    if search.image_size != 32:
        words += ['--image_size', str(search.image_size)]
    if search.no_flip:
        words += ['--no_flip']
    if search.crop_padding != 4:
        words += ['--crop_padding', str(search.crop_padding)]
    if search.cutout_length != 16:
        words += ['--cutout_length', str(search.cutout_length)]
    return words


def write_report(run_dir: str) -> Dict:
    """Write RUN_DIR/report.md (and plots); returns the numbers it reports."""
    records = read_records(run_dir)
    last = records[-1]
    search = RecordedSearch.read(run_dir)
    ops = operation_counts(last)
    plots = _plots(run_dir, records, ops)
    nb201 = search.space == 'nb201'
    network = (f"NAS-Bench-201 supernet C={search.init_channels}, N={search.num_cells}" if nb201 else
               f"supernet C={search.init_channels} with {search.layers} layers")
    strategy = ('' if search.strategy == 'evolution' else
                ' Strategy: random (no selection; every generation drawn afresh, as the first).')
    lines = [f"# EvNAS search report: {os.path.basename(os.path.abspath(run_dir))}", '',
             f"{len(records)} of {search.epochs} generations, population {search.pop_size}, dataset "
             f"{search.dataset}, {network}.{strategy}", '',
             f"Best fitness of the last generation: **{_pct(last['best'])} %** (top-1 on the held-out images).", '']
    if 'feasible' in last and last['population']:
        chosen = last['population'][0]
        lines += ["The result, the best feasible individual (constraint domination): "
                  f"fitness {_pct(chosen['fitness'])} %, "
                  f"{chosen['params'] / 1e6:.3f} M parameters, {chosen['macs'] / 1e6:.1f} M MACs"
                  + (f", {chosen['latency_ms']:.2f} ms predicted latency" if 'latency_ms' in chosen else '')
                  + ('' if chosen['feasible'] else ' — **no individual fits the budget**; this is the least infeasible')
                  + '.', '']
    truth = last.get('benchmark')
    if truth:
        lines += [f"Its true accuracy in NAS-Bench-201 (200 epochs): **{truth['test']:.2f} %** test, "
                  f"{truth['valid']:.2f} % validation.", '']
    if plots:
        lines += [f"![{os.path.splitext(os.path.basename(p))[0]}]({os.path.basename(p)})" for p in plots] + ['']
    if os.path.isfile(os.path.join(run_dir, 'trust', 'trust.md')):
        lines += ["How far this search's ranking can be trusted: [trust/trust.md](trust/trust.md) (trust.py).", '']
    with_truth = any('benchmark' in r for r in records)
    with_tau = any('benchmark_tau' in r for r in records)
    budgeted = 'feasible' in last
    lines += ['## Per generation', '', '| generation | best | mean | worst | distinct genotypes |'
              + (' feasible |' if budgeted else '') + (' true test | true valid |' if with_truth else '')
              + (' tau with the benchmark |' if with_tau else ''),
              '| ---: | ---: | ---: | ---: | ---: |' + (' ---: |' if budgeted else '')
              + (' ---: | ---: |' if with_truth else '') + (' ---: |' if with_tau else '')]
    lines += [f"| {r['generation']} | {_pct(r['best'])} | {_pct(r['mean'])} | {_pct(r['worst'])} | "
              f"{r['distinct_genotypes']} / {len(r['population'])} |"
              + (f" {r.get('feasible', 'n/a')} / {len(r['population'])} |" if budgeted else '')
              + (f" {_pct(_true_accuracy(r, 'test'))} | {_pct(_true_accuracy(r, 'valid'))} |" if with_truth else '')
              + (f" {_tau(r.get('benchmark_tau'))} |" if with_tau else '')
              for r in records]
    if budgeted:
        lines += _budget_lines(records, search)
    weight_sharing = random_search.read(run_dir)
    if weight_sharing is not None:
        lines += _weight_sharing_lines(run_dir, weight_sharing, search)
    cells = list(ops)
    lines += ['', '## Operations chosen in the final population', '',
              '| operation | ' + ' | '.join({'reduce': 'reduction', 'cell': 'edges'}.get(c, c) for c in cells) + ' |',
              '| --- |' + ' ---: |' * len(cells)]
    lines += [f"| {name} | " + ' | '.join(str(ops[c][name]) for c in cells) + ' |' for name in _op_names(ops)]
    result = (_nb201_best(run_dir, last, truth) if nb201 else _darts_best(run_dir, last, search))
    lines += result.pop('lines')
    atomic_write_text(os.path.join(run_dir, 'report.md'), '\n'.join(lines))
    return {'records': records, 'operations': ops, 'plots': plots, 'strategy': search.strategy,
            'weight_sharing': weight_sharing, **result}


def _weight_sharing_lines(run_dir: str, result: Dict, search: RecordedSearch) -> List[str]:
    pick = result['pick']
    described = pick['arch'] if 'arch' in pick else str(genotype_from_dict(pick['genotype']))
    lines = ['', '## Random search with weight sharing', '',
             f"Every architecture the run drew ({result['architectures']} distinct over {result['generations']} "
             f"generations) scored again on the final supernet (Li & Talwalkar, 2019): {result['fitness_calls']} more "
             f"fitness calls, {result['seconds']:.0f} s (the generations' fitness took "
             f"{result['search_fitness_seconds']:.0f} s). The best of them, fitness {_pct(pick['fitness'])} %:", '',
             f"`{described}`", '']
    if search.space != 'nb201':
        genotype = os.path.join(run_dir, random_search.GENOTYPE)
        words = ['python', 'train.py', '--genotype', genotype] + search_data_flags(search) + ['--auxiliary', '--cutout']
        lines += [f"Train it: `{' '.join(shlex.quote(w) for w in words)}`", '']
    return lines


def _diagram_lines(diagram: Dict, fallback: str) -> List[str]:
    images = [os.path.basename(p) for p in diagram['written'] if p.endswith('.png')]
    return [f"![{name}]({name})" for name in images] or [fallback]


def _darts_best(run_dir: str, last: Dict, search: RecordedSearch) -> Dict:
    """The best cell of a DARTS-space search, its diagram, its cost, and the command that trains it."""
    genotype_path = os.path.join(run_dir, 'genotype.json')
    best = load_genotype(genotype_path) if os.path.exists(genotype_path) else \
        genotype_from_dict(last['population'][0]['genotype'])
    diagram = draw(best, run_dir, 'genotype')
    info_path = os.path.join(run_dir, 'dataset.json')
    num_classes = json.load(open(info_path))['num_classes'] if os.path.exists(info_path) else 10
    costs = {'cifar': network_cost(best, 'cifar10', num_classes=num_classes),
             'imagenet': network_cost(best, 'imagenet')}
    command = train_command(run_dir, search)
    lines = ['', '## Best architecture', '', '```', cell_text(best.normal, best.normal_concat, 'normal cell')
             + cell_text(best.reduce, best.reduce_concat, 'reduction cell') + '```', '']
    lines += _diagram_lines(diagram, 'Diagrams: `genotype_normal.dot`, `genotype_reduction.dot` (install Graphviz '
                                     'to render them).')
    predicted = _latency_line(run_dir, best)
    lines += ['', '## Cost', '', f"- {describe_cost(costs['cifar'], 'CIFAR (C=36, 20 layers)')}",
              f"- {describe_cost(costs['imagenet'], 'ImageNet (C=48, 14 layers)')}"]
    lines += [f"- Latency: {predicted}"] if predicted else []
    lines += ['', f"Train it: `{command}`", '']
    return {'lines': lines, 'genotype': best, 'costs': costs, 'train_command': command, 'latency': predicted,
            'next_step': f"train it with: {command}" + (f" ({predicted})" if predicted else '')}


def _nb201_best(run_dir: str, last: Dict, truth: Optional[Dict]) -> Dict:
    """The best cell of a NAS-Bench-201 search, its diagram, and where its true accuracy is."""
    arch = load_arch(os.path.join(run_dir, 'genotype.json')) or last['population'][0]['arch']
    diagram = draw_nb201(arch, run_dir, 'genotype')
    lines = ['', '## Best architecture', '', f"`{arch}`", '', '```', nb201_cell_text(arch) + '```', '']
    lines += _diagram_lines(diagram, 'Diagram: `genotype_cell.dot` (install Graphviz to render it).')
    if truth:
        next_step = f"NAS-Bench-201 #{truth['index']}: {truth['test']:.2f} % test accuracy (200 epochs)"
    else:
        next_step = ("its true accuracy: look it up in NAS-Bench-201 (run with --api_path FILE, or "
                     f"api.query_index_by_arch('{arch}') in the benchmark's API)")
    predicted = _latency_line(run_dir, arch)
    lines += ['', f"Latency: {predicted}."] if predicted else []
    lines += ['', f"Next: {next_step}.", '']
    return {'lines': lines, 'genotype': arch, 'costs': {}, 'train_command': None, 'latency': predicted,
            'next_step': next_step}


def compare_runs(summaries: List[Dict]) -> List[str]:
    """Mean and spread over several runs (the original's three seeds) of the last generation's best fitness and,
    where looked up, its true accuracies; runs of different strategies side by side, each group on its own."""
    groups: Dict[str, List[Dict]] = {}
    for summary in summaries:
        groups.setdefault(summary['strategy'], []).append(summary)
    if len(groups) == 1:
        return _compare_group(summaries)
    lines = []
    for strategy, group in groups.items():
        lines += [f"strategy {strategy} ({len(group)} runs):"] + ['  ' + line for line in _compare_group(group)]
    return lines + ["Fitness is not compared across strategies: each run's fitness comes from its own supernet, "
                    "trained on different architectures. To compare what they found, train the results alone "
                    "(trust.py --compare)."]


def _compare_group(summaries: List[Dict]) -> List[str]:
    lines = []
    # The result's fitness: the best individual's, or with a budget the best feasible one's (rank 1 either way).
    columns = {'fitness': [s['records'][-1]['population'][0]['fitness'] for s in summaries]}
    for key in ('test', 'valid'):
        values = [_true_accuracy(s['records'][-1], key) for s in summaries]
        if all(v is not None for v in values):
            columns[f"true {key}"] = values
    for name, values in columns.items():
        values = [v for v in values if v is not None]
        if values:
            spread = statistics.stdev(values) if len(values) > 1 else 0.
            lines.append(f"{name}: {statistics.mean(values):.2f} +- {spread:.2f} (std over {len(values)} runs: "
                         f"{', '.join(f'{v:.2f}' for v in values)})")
    return lines


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = arguments.ArgumentParser('report', description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('run_dirs', nargs='+', metavar='run_dir',
                        help='a train_search.py run directory; with several (e.g. one per seed), also their mean and '
                             'spread')
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> Dict:
    results = []
    for run_dir in args.run_dirs:
        result = write_report(run_dir)
        print(f"wrote {os.path.join(run_dir, 'report.md')}" + (f" and {len(result['plots'])} plots" if result['plots']
                                                                else ' (install matplotlib for the plots)'))
        results.append(result)
    if len(results) > 1:
        for line in compare_runs(results):
            print(line)
    return results[0] if len(results) == 1 else {'runs': results}


if __name__ == '__main__':
    sys.exit(stopping.run_main(main, parse_args()))
