"""Build a latency table on the device you deploy on, and measure how well it predicts (--check).

The table holds the latency of every part an architecture of the space can run in its evaluation network at
--budget_size: every operation at every cell position, shape and stride, and the fixed parts (stem, the
cells' preprocessing, NAS-Bench-201's residual reductions, the head), each timed alone at --batch_size
after --warmup untimed calls, median and spread of --repeats. It then measures --calibration whole networks
of random architectures and fits one overhead per cell: what the sum of the parts misses (the cells'
additions and concatenations, memory traffic between parts). `train_search.py --max_latency MS
--latency_table FILE` predicts each individual's latency from it; the file may be built on one machine and
used on another.

--check TABLE draws --archs other random architectures (none of the calibration's), measures each whole network
twice the way `export.py --latency` does, and gives the prediction's rank correlation and error beside the
measurement's own test-retest rank correlation and MACs' rank correlation with latency.

Run it alone on the machine: anything else running moves the figures.

Examples:
    python latency_table.py --space darts --out latency-cpu.json                 # eager PyTorch, this CPU
    python latency_table.py --space darts --device cuda --out latency-gpu.json   # eager PyTorch, a CUDA GPU
    python latency_table.py --space darts --runtime onnxruntime --threads 1 --out latency-ort.json
    python latency_table.py --check latency-cpu.json --archs 30 --out check-cpu.json
    python train_search.py --max_latency 8 --latency_table latency-cpu.json ...
"""
import argparse
import json
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

import speed
from architect_evolution import init_population
from cli import arguments
from cost import count_macs
from runtime import devices, logs, stopping
from runtime.checkpoint import atomic_write_text
from runtime.settings import SupernetSettings
from search import latency
from search.budget import SIZES
from search.latency import LatencyTable, Network, build_network, runner, summarize, synchronizer, time_calls
from search_space import SPACES, get_space
from stats.rank_stats import spearman_rho


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = arguments.ArgumentParser('latency_table', description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--space', choices=tuple(SPACES), default='darts', help='search space (default: darts)')
    parser.add_argument('--budget_size', choices=SIZES, default='cifar',
                        help="the network a search's budget is measured on (as train_search.py's flag)")
    parser.add_argument('--num_classes', type=int, default=10, help='classes of the cifar size (default: 10)')
    parser.add_argument('--init_channels', type=int, default=None,
                        help="another network than --budget_size's: its channels (tests, a smaller deployment)")
    parser.add_argument('--layers', type=int, default=None, help="... its cells (NAS-Bench-201: cells per stage)")
    parser.add_argument('--image_size', type=int, default=None, help='... its image size')
    parser.add_argument('--device', type=str, default='cpu', help='cpu, cuda, cuda:N (default: cpu)')
    parser.add_argument('--runtime', choices=latency.RUNTIMES, default=None,
                        help='eager PyTorch, or ONNX Runtime on the CPU (default: eager; with --check the table\'s)')
    parser.add_argument('--threads', type=int, default=None,
                        help="intra-op threads of torch and ONNX Runtime (default: torch's; with --check the table's)")
    parser.add_argument('--batch_size', type=int, default=1, help='images per call (default: 1)')
    parser.add_argument('--warmup', type=int, default=latency.WARMUP,
                        help=f'untimed calls first (default: {latency.WARMUP})')
    parser.add_argument('--repeats', type=int, default=50, help='timed calls of each part (default: 50)')
    parser.add_argument('--calibration', type=int, default=8,
                        help='whole networks the per-cell overhead is fitted on (default: 8; 0: none)')
    parser.add_argument('--seed', type=int, default=None,
                        help='of the random architectures (default: 0, and 1 with --check)')
    parser.add_argument('--check', type=str, default=None, metavar='TABLE',
                        help='measure how well TABLE predicts whole networks, instead of building one')
    parser.add_argument('--archs', type=int, default=30, help='architectures --check measures (default: 30)')
    parser.add_argument('--out', type=str, default=None,
                        help='the table (default: latency-SPACE-SIZE-DEVICE-RUNTIME.json); with --check, its figures')
    args = parser.parse_args(argv)
    given = [name for name in ('threads', 'init_channels', 'layers', 'image_size') if getattr(args, name) is not None]
    arguments.check_args(parser, args, at_least_one=['num_classes', 'batch_size', 'warmup', 'repeats', 'archs'] + given,
                         non_negative=('calibration',))
    if args.warmup < latency.WARMUP:
        parser.error(f"--warmup must be at least {latency.WARMUP}: oneDNN and cuDNN build their kernels on the "
                     f"first calls")
    if args.seed is None:
        args.seed = 1 if args.check else 0
    return args


def main(args: argparse.Namespace) -> Dict:
    logger = logs.setup_logger('latency_table')
    device = devices.resolve_device(args.device)
    speed.configure_process(speed.default_config(device))  # the process settings every script runs with
    if args.check:
        table = LatencyTable.read(args.check)
        runtime = args.runtime or table.target['runtime']
        threads = args.threads or int(table.target['threads'])
    else:
        table, runtime, threads = None, args.runtime or 'eager', args.threads or torch.get_num_threads()
    if runtime == 'onnxruntime' and device.type != 'cpu':
        raise latency.TableError("--runtime onnxruntime runs on the CPU here (its CPU execution provider): leave "
                                 "out --device")
    torch.set_num_threads(threads)
    batch = table.target['batch_size'] if table else args.batch_size
    target = {**latency.this_target(device, runtime, threads, batch), 'warmup': args.warmup, 'repeats': args.repeats}
    if table is not None:
        return check(args, table, target, device, logger)
    return build(args, target, device, logger)


# ----------------------------------------------------------------------------------------------------------
# Building a table

def build(args: argparse.Namespace, target: Dict[str, Any], device: torch.device, logger) -> Dict:
    network = Network.at(args.space, args.budget_size, args.num_classes)
    network = Network(network.space, network.size, args.init_channels or network.init_channels,
                      args.layers or network.layers, args.image_size or network.image_size, network.num_classes)
    parts = latency.all_parts(network)
    logger.info(f"timing {len(parts)} parts of {network.describe()}: {target['runtime']} on {target['device_name']}, "
                f"{target['threads']} thread(s), batch {target['batch_size']}, {args.warmup} warm-up and "
                f"{args.repeats} timed calls each")
    started = time.time()
    entries = {}
    for part in parts:
        module = part.make().eval().to(device)
        inputs = torch.randn(target['batch_size'], *part.shape, device=device)
        entries[part.key] = summarize(time_calls(runner(module, inputs, target['runtime'], target['threads']),
                                                 args.repeats, args.warmup, synchronizer(device, target['runtime'])))
        logger.info(f"  {part.key:<40} {entries[part.key]['ms']:8.3f} ms  "
                    f"(p10 {entries[part.key]['p10']:.3f}, p90 {entries[part.key]['p90']:.3f})")
    table = LatencyTable(network, target, entries)
    if target['runtime'] == 'onnxruntime':
        take_out_the_call(table, device, args.repeats, args.warmup, logger)
    table.calibration = [measure_network(table, arch, device, args.repeats, args.warmup)
                         for arch in random_architectures(network.space, args.calibration, args.seed)]
    if table.calibration:
        # one overhead per cell: the median of the calibration networks' (measured - sum of parts) / cells
        table.cell_overhead_ms = float(np.median([(c['measured_ms'] - c['sum_of_parts_ms']) / c['cells']
                                                  for c in table.calibration]))
        for c in table.calibration:
            logger.info(f"  calibration: measured {c['measured_ms']:.3f} ms, sum of parts {c['sum_of_parts_ms']:.3f} "
                        f"ms over {c['cells']} cells")
    logger.info(f"per-cell overhead {table.cell_overhead_ms:.4f} ms, fitted on {len(table.calibration)} networks")
    out = args.out or f"latency-{network.space}-{network.size}-{target['device']}-{target['runtime']}.json"
    atomic_write_text(out, json.dumps(table.to_json(), indent=1) + '\n')
    logger.info(f"wrote {out} in {time.time() - started:.0f} s; use it with train_search.py --max_latency MS "
                f"--latency_table {out}, and check it with python latency_table.py --check {out}")
    return table.to_json()


def take_out_the_call(table: LatencyTable, device: torch.device, repeats: int, warmup: int, logger) -> None:
    """ONNX Runtime's session call costs a fixed time, which a network pays once and a table timed part by part
    once per part: measured on a graph of one Identity node, it is taken out of every part (none below 0) and
    counted once per network."""
    run = runner(torch.nn.Identity().eval(), torch.zeros(1, 1, 1, 1), 'onnxruntime', int(table.target['threads']))
    table.call_ms = summarize(time_calls(run, repeats, warmup))['ms']
    for entry in table.parts.values():
        for name in ('ms', 'p10', 'p90'):
            entry[name] = max(0., entry[name] - table.call_ms)
    logger.info(f"  ONNX Runtime's call {table.call_ms:.3f} ms: taken out of every part, counted once per network")


def random_architectures(space_name: str, count: int, seed: int) -> List[Any]:
    """`count` distinct architectures drawn as a search draws its first generation, from `seed`."""
    space = get_space(space_name)
    shapes = space.alpha_shapes(SupernetSettings())
    generator = torch.Generator().manual_seed(seed)
    found: Dict[str, Any] = {}
    for _ in range(100 * count):
        if len(found) == count:
            break
        (individual,) = init_population(1, shapes, generator)
        found.setdefault(space.key(individual.alphas), space.genotype(individual.alphas))
    return list(found.values())


def measure_network(table: LatencyTable, architecture: Any, device: torch.device, repeats: int,
                    warmup: int) -> Dict[str, Any]:
    """One whole network measured in the table's runtime, beside the sum of the table's parts."""
    model = build_network(table.network, architecture).to(device)
    inputs = torch.randn(table.target['batch_size'], 3, table.network.image_size, table.network.image_size,
                         device=device)
    run = runner(model, inputs, table.target['runtime'], int(table.target['threads']))
    wait = synchronizer(device, table.target['runtime'])
    total, cells = table.sum_of_parts(architecture)
    return {'architecture': get_space(table.network.space).genotype_key(architecture),
            'measured_ms': summarize(time_calls(run, repeats, warmup, wait))['ms'], 'sum_of_parts_ms': total,
            'cells': cells}


# ----------------------------------------------------------------------------------------------------------
# Checking a table

def check(args: argparse.Namespace, table: LatencyTable, target: Dict[str, Any], device: torch.device,
          logger) -> Dict:
    """The prediction against whole networks: two passes, one after the other, over --archs held-out
    architectures."""
    runtime = target['runtime']
    differs = table.differs_from(target)
    if differs:
        logger.warning(differs)
    space = get_space(table.network.space)
    calibrated = {c['architecture'] for c in table.calibration}
    archs = [a for a in random_architectures(space.name, args.archs + len(calibrated), args.seed)
             if space.genotype_key(a) not in calibrated][:args.archs]
    logger.info(f"checking {args.check} ({table.describe()}) on {len(archs)} held-out architectures of "
                f"{table.network.describe()}: {runtime} on {target['device_name']}, {target['threads']} thread(s)")
    models = [build_network(table.network, a).to(device) for a in archs]
    inputs = torch.randn(table.target['batch_size'], 3, table.network.image_size, table.network.image_size,
                         device=device)
    runs = [runner(m, inputs, runtime, target['threads']) for m in models]
    wait = synchronizer(device, runtime)
    passes = [[summarize(time_calls(run, args.repeats, args.warmup, wait))['ms'] for run in runs] for _ in range(2)]
    predicted = [table.predict(a) for a in archs]
    parts_only = [table.sum_of_parts(a)[0] for a in archs]
    size = table.network.image_size
    macs = [count_macs(model, (1, 3, size, size)) for model in models]
    first, second = np.array(passes[0]), np.array(passes[1])
    both = np.concatenate([first, second])

    def mape(prediction):
        return float(100 * np.mean(np.abs(np.tile(prediction, 2) - both) / both))
    result = {
        'table': args.check, 'table_sha256': table.sha256, 'table_target': table.target,
        'target': target, 'network': table.network.__dict__, 'archs': len(archs), 'seed': args.seed,
        'spearman_predicted': [spearman_rho(predicted, first), spearman_rho(predicted, second)],
        'mape_predicted': mape(np.array(predicted)),
        'spearman_sum_of_parts': [spearman_rho(parts_only, first), spearman_rho(parts_only, second)],
        'mape_sum_of_parts': mape(np.array(parts_only)),
        'spearman_retest': spearman_rho(first, second),
        'spearman_macs': [spearman_rho(macs, first), spearman_rho(macs, second)],
        'cell_overhead_ms': table.cell_overhead_ms,
        'rows': [{'architecture': space.genotype_key(a), 'predicted_ms': p,
                  'sum_of_parts_ms': s, 'measured_ms': [m1, m2], 'macs': c}
                 for a, p, s, m1, m2, c in zip(archs, predicted, parts_only, first, second, macs)],
        'differs': differs,
    }
    logger.info(f"measured {float(np.median(both)):.3f} ms median ({float(both.min()):.3f} to {float(both.max()):.3f})")
    for label, key in (('predicted', 'predicted'), ('sum of parts alone', 'sum_of_parts')):
        rho = result[f'spearman_{key}']
        logger.info(f"{label}: Spearman {rho[0]:.3f} / {rho[1]:.3f} (each pass), mean absolute error "
                    f"{result[f'mape_{key}']:.1f} %")
    logger.info(f"the measurement's own test-retest Spearman {result['spearman_retest']:.3f}; MACs' Spearman with "
                f"latency {result['spearman_macs'][0]:.3f} / {result['spearman_macs'][1]:.3f}")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1) + '\n')
        logger.info(f"wrote {args.out}")
    return result


if __name__ == '__main__':
    sys.exit(stopping.run_main(main, parse_args()))
