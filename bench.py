"""Benchmarks (not tests): how fast the hot paths of a search and of training run on this device, in the
paper-exact configuration and in this project's fast defaults, side by side.

Measured, each as a median over --repeats timed runs after --warmup untimed ones (with --rounds N, the
variants take turns N times and the table gives medians over the rounds, and as fast/exact the median of
each round's ratio, so that a machine whose speed drifts moves both sides of a ratio together):
  supernet_train   supernet training step (C=16, 8 layers, batch 64), images/s
  fitness          fitness evaluation: no gradient, BatchNorm in train mode (batch 1024 on GPU, 256 on CPU)
  augment          the training augmentation: per-image torchvision in 2 DataLoader workers, vs batch-wise
  evalnet_train    evaluation-network training step (EvNAS-A, C=36, 20 layers, batch 96), images/s
  generation       one generation of a small end-to-end search (training + fitness of every individual),
                   paper-exact = original per-image pipeline in workers + exact supernet, fast = defaults
  nb201_train      NAS-Bench-201 supernet training step (C=16, N=5, running statistics as searchNAS201.sh,
                   batch 64), images/s
  nb201_fitness    NAS-Bench-201 fitness: no gradient, eval mode (batch 1024 on GPU, 256 on CPU)
then projects the time of the full searches (50 generations, 50 individuals, CIFAR-10) on this device. With
--ablate, each setting of the fast defaults is also measured switched off alone ("no_SETTING" columns; the
ratio column stays fast/exact), which is how this project decides that a setting earns its place.

Examples:
    python bench.py --device cpu --json bench-cpu.json
    python bench.py --device cuda --amp --compile          # adds the opt-in accelerators as extra columns
    python bench.py --quick --device cpu                   # tiny sizes: a smoke run in seconds
    python bench.py --device cpu --rounds 3                # paper-exact and fast alternate three times
    python bench.py --device cpu --ablate --rounds 3 --only supernet_train,fitness   # what each setting earns
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

import speed
import utils
from architect_evolution import darts_shapes, decode, init_population
from cli import arguments
from engine import Monitor, OptimizerStep, evaluate_population, train_generation
from genotypes import EvNASA
from inputs.data import make_synthetic
from inputs.loaders import PerImageLoader, TensorLoader, make_loader
from model import NetworkCIFAR
from model_search import Network
from model_search_nb201 import Network as NB201Network
from runtime import devices, stopping
from runtime.memory import peak_memory
from runtime.settings import Augment
from search_space import NB201

FULL_SEARCH = {'train_images': 25000, 'valid_images': 25000, 'batch': 64, 'pop_size': 50, 'generations': 50}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = arguments.ArgumentParser('bench', description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', type=str, default='auto', help='auto, cpu, cuda or cuda:N (default: auto)')
    parser.add_argument('--only', type=str,
                        default='supernet_train,fitness,augment,evalnet_train,generation,nb201_train,nb201_fitness',
                        help='comma-separated benchmarks to run (default: all of the table; also available: '
                             'fitness_scaling, a small search with 1 process and with 2 under torchrun, and '
                             'valid_size_ranking, how well a --valid_size subset ranks a population)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs before timing (default: 2)')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs; the median is reported (default: 5)')
    parser.add_argument('--rounds', type=int, default=1,
                        help='times each benchmark runs every variant, taking turns (default: 1)')
    parser.add_argument('--amp', action='store_true', help='also measure the fast path with bf16 autocast')
    parser.add_argument('--compile', action='store_true', help='also measure the fast path with torch.compile')
    parser.add_argument('--ablate', action='store_true',
                        help='also measure the fast defaults with each of their settings off, one at a time')
    parser.add_argument('--quick', action='store_true', help='tiny sizes, to check that the script runs')
    parser.add_argument('--json', type=str, default=None, help='also write the results to this JSON file')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s choice)')
    parser.add_argument('--in_process', action='store_true',
                        help='run every measurement in this process (default: each in a fresh process, so that '
                             'peak memory, allocator state and process-wide settings such as reuse_freed_memory of '
                             'one never leak into the next)')
    arguments.add_cudnn_argument(parser)
    parser.add_argument('--one', nargs=2, metavar=('BENCHMARK', 'VARIANT'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error('--repeats must be at least 1 and --warmup at least 0')
    if args.rounds < 1:
        parser.error('--rounds must be at least 1')
    return args


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _variants(args, device) -> Dict[str, Dict]:
    fast = speed.default_config(device)
    variants = {'paper_exact': {'config': speed.PAPER_EXACT, 'amp': False, 'compile': False},
                'fast': {'config': fast, 'amp': False, 'compile': False}}
    if args.amp:
        variants['fast_amp'] = {'config': fast, 'amp': True, 'compile': False}
    if args.compile:
        variants['fast_compile'] = {'config': fast, 'amp': False, 'compile': True}
    if args.ablate:
        for name in speed.SETTINGS:
            # A process-wide setting cannot be switched off for one variant of a process that runs them all.
            if getattr(fast, name) and not (args.in_process and name in speed.PROCESS_SETTINGS):
                variants[f'no_{name}'] = {'config': fast.without(name), 'amp': False, 'compile': False}
    return variants


def _build(network: Callable, variant: Dict, device) -> Tuple[nn.Module, nn.Module]:
    """(model, the module to call) for `variant`: network(impl) built with the variant's layers, on `device` in
    its memory format, compiled if asked; the process takes the variant's process-wide settings too."""
    config = variant['config']
    speed.configure_process(config)
    model = network(speed.layers(config)).to(device, memory_format=config.memory_format)
    return model, speed.compiled(model) if variant['compile'] else model


def _autocast(variant: Dict, device):
    return devices.mixed_precision(device, variant['amp'])[0]


def _individual() -> List[torch.Tensor]:
    return decode(init_population(1, darts_shapes(4), utils.make_generator(0))[0].alphas)


def darts_supernet(sizes) -> Tuple[Callable, List[torch.Tensor]]:
    """(the DARTS supernet for an impl, a decoded individual)."""
    return lambda impl: Network(sizes['C'], 10, sizes['layers'], impl=impl), _individual()


def nb201_supernet(sizes) -> Tuple[Callable, List[torch.Tensor]]:
    """(the NAS-Bench-201 supernet for an impl, a decoded individual)."""
    individual = NB201.decode(init_population(1, [(6, 5)], utils.make_generator(0))[0].alphas)
    return (lambda impl: NB201Network(sizes['nb201_C'], sizes['nb201_N'], 10, track_running_stats=True, impl=impl),
            individual)


def bench_supernet_train(args, device, variant, sizes, supernet: Callable = darts_supernet) -> Dict:
    torch.manual_seed(0)
    network, individual = supernet(sizes)
    model, net = _build(network, variant, device)
    model.set_arch_parameters(individual)
    x = torch.randn(sizes['batch'], 3, 32, 32, device=device).contiguous(memory_format=variant['config'].memory_format)
    y = torch.randint(0, 10, (sizes['batch'],), device=device)
    return time_training_step(args, device, variant, model, lambda: nn.functional.cross_entropy(net(x).float(), y),
                              sizes['batch'])


def time_training_step(args, device, variant, model: nn.Module, loss_fn: Callable, batch: int) -> Dict:
    """Images per second of the search's and training's step: loss, backward, gradient clipping at 5, SGD."""
    optimize = OptimizerStep(_sgd(model), grad_clip=5.)
    autocast = _autocast(variant, device)

    def step():
        with autocast():
            loss = loss_fn()
        optimize(loss)

    out = {}
    with peak_memory(device, out):
        seconds = median_seconds(step, device, args.warmup, args.repeats)
    return {'images_per_sec': batch / seconds, 'seconds_per_step': seconds, **out}


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)


def bench_fitness(args, device, variant, sizes, supernet: Callable = darts_supernet) -> Dict:
    torch.manual_seed(0)
    network, individual = supernet(sizes)
    model, net = _build(network, variant, device)
    model.set_arch_parameters(individual)
    batch = sizes['fitness_batch']
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=variant['config'].memory_format)
    autocast = _autocast(variant, device)
    # BatchNorm in the mode the search's fitness uses (train in the DARTS space: engine.evaluate_population)
    model.train(supernet is darts_supernet)

    @torch.no_grad()
    def forward():
        with autocast():
            net(x)

    out = {}
    with peak_memory(device, out):
        seconds = median_seconds(forward, device, args.warmup, args.repeats)
    return {'images_per_sec': batch / seconds, 'seconds_per_batch': seconds, **out}


def bench_augment(args, device, variant, sizes) -> Dict:
    array = make_synthetic(True, sizes['augment_images'])
    augment = Augment(cutout_length=16)
    if variant['config'] == speed.PAPER_EXACT:
        loader = PerImageLoader(array, 128, shuffle=True, augment=augment, generator=utils.make_generator(0),
                                num_workers=2, device=device)
    else:
        loader = TensorLoader(array.to(device), 128, shuffle=True, augment=augment, generator=utils.make_generator(0),
                              memory_format=variant['config'].memory_format)

    def one_pass():
        for x, _ in loader:
            pass

    seconds = median_seconds(one_pass, device, min(args.warmup, 1), max(1, min(args.repeats, 3)))
    return {'images_per_sec': len(array) / seconds}


def bench_evalnet_train(args, device, variant, sizes) -> Dict:
    torch.manual_seed(0)
    model, net = _build(lambda impl: NetworkCIFAR(sizes['eval_C'], 10, sizes['eval_layers'], True, EvNASA, impl=impl),
                        variant, device)
    model.drop_path_prob = 0.2
    batch = sizes['eval_batch']
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=variant['config'].memory_format)
    y = torch.randint(0, 10, (batch,), device=device)

    def loss_fn():  # with the auxiliary head, weight 0.4, as train.py --auxiliary
        logits, logits_aux = net(x)
        return nn.functional.cross_entropy(logits.float(), y) + 0.4 * nn.functional.cross_entropy(logits_aux.float(), y)

    return time_training_step(args, device, variant, model, loss_fn, batch)


def bench_generation(args, device, variant, sizes) -> Dict:
    """One generation of a small search through the search's own loops (engine.py)."""
    torch.manual_seed(0)
    exact = variant['config'] == speed.PAPER_EXACT
    array = make_synthetic(True, 2 * sizes['gen_images'])
    model, net = _build(lambda impl: Network(sizes['gen_C'], 10, sizes['gen_layers'], impl=impl), variant, device)
    optimize = OptimizerStep(_sgd(model), grad_clip=5.)
    population = init_population(sizes['gen_pop'], darts_shapes(4), utils.make_generator(0))
    half = sizes['gen_images']
    indices = torch.arange(len(array))
    loader = dict(kind='torchvision' if exact else 'tensor', array=array, device=device, shuffle=True,
                  augment=Augment(), num_workers=2, memory_format=variant['config'].memory_format)
    train_loader = make_loader(batch_size=64, indices=indices[:half], generator=utils.make_generator(1), **loader)
    valid_loader = make_loader(batch_size=sizes['fitness_batch'], indices=indices[half:],
                               generator=utils.make_generator(2), **loader)
    autocast = _autocast(variant, device)
    seeds = list(range(len(population)))

    def generation():
        decoded = [[a.to(device) for a in decode(ind.alphas)] for ind in population]
        train_generation(model, decoded, train_loader, optimize, Monitor(report_freq=10 ** 9), generation=1, net=net,
                         autocast=autocast)
        evaluate_population(model, population, decoded, valid_loader, seeds, Monitor(), generation=1, net=net,
                            autocast=autocast)

    out = {}
    with peak_memory(device, out):
        seconds = median_seconds(generation, device, min(args.warmup, 1), max(1, min(args.repeats, 3)))
    return {'seconds_per_generation': seconds, **out}


def fitness_scaling(args, device, sizes) -> Dict:
    """Fitness-evaluation time per generation of a small search with 1 process and with 2 under torchrun,
    one CPU thread per process (the search's own timings, from its records)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in (1, 2):
            run_dir = os.path.join(tmp, f'ranks{ranks}')
            launcher = [sys.executable] if ranks == 1 else [sys.executable, '-m', 'torch.distributed.run',
                                                            '--standalone', f'--nproc_per_node={ranks}']
            command = launcher + [os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train_search.py'),
                                  '--dataset', 'synthetic', '--synthetic_size', str(2 * sizes['gen_images']),
                                  '--init_channels', str(sizes['gen_C']), '--layers', str(sizes['gen_layers']),
                                  '--pop_size', str(2 * sizes['gen_pop']), '--tsize', '2', '--epochs', '2',
                                  '--valid_batch_size', str(sizes['fitness_batch']), '--device', 'cpu',
                                  '--run_dir', run_dir, '--report_freq', '1000']
            done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
            if done.returncode != 0:
                raise utils.UserError(f"the {ranks}-process search failed: {done.stderr.strip().splitlines()[-1]}")
            with open(os.path.join(run_dir, 'generations', 'gen_002.json')) as f:
                record = json.load(f)
            results[ranks] = {'fitness_seconds': record['fitness_seconds'], 'train_seconds': record['train_seconds']}
    results['ratio'] = results[2]['fitness_seconds'] / results[1]['fitness_seconds']
    return results


def _ranks(values: List[float]) -> List[int]:
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks


def spearman(a: List[float], b: List[float]) -> float:
    ra, rb = _ranks(a), _ranks(b)
    n = len(a)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb)) / (n * (n * n - 1))


def valid_size_ranking(args, device, sizes) -> Dict:
    """How well fitness on a --valid_size subset ranks a population compared with the whole held-out set:
    a small supernet trained for three generations' worth of steps on generated data, then 16 random
    individuals scored on all 2048 held-out images and on fixed subsets of them (Spearman rank correlation,
    and whether the best individual stays the best). Sized to finish in about ten minutes on two CPU cores."""
    torch.manual_seed(0)
    n_train, n_valid = (256, 512) if args.quick else (1024, 2048)
    array = make_synthetic(True, n_train + n_valid).to(device)
    fast = {'config': speed.default_config(device), 'compile': False}
    model, _ = _build(lambda impl: Network(sizes['gen_C'], 10, sizes['gen_layers'], impl=impl), fast, device)
    optimize = OptimizerStep(_sgd(model), grad_clip=5.)
    population = init_population(8 if args.quick else 16, darts_shapes(4), utils.make_generator(0))
    decoded = [[a.to(device) for a in decode(ind.alphas)] for ind in population]
    fmt = fast['config'].memory_format
    train_loader = TensorLoader(array, 64, torch.arange(n_train), True, Augment(), utils.make_generator(1),
                                memory_format=fmt)
    for _ in range(1 if args.quick else 3):
        train_generation(model, decoded, train_loader, optimize, Monitor(report_freq=10 ** 9), generation=1)
    seeds = list(range(len(population)))

    def score(indices) -> List[float]:
        loader = TensorLoader(array, sizes['fitness_batch'], indices, True, Augment(), utils.make_generator(2),
                              memory_format=fmt)
        evaluate_population(model, population, decoded, loader, seeds, Monitor(), generation=1)
        return [ind.fitness for ind in population]

    valid = torch.arange(n_train, n_train + n_valid)
    full = score(valid)
    result = {'valid_images': n_valid, 'population': len(population)}
    for size in ((64, 128, 256) if args.quick else (128, 256, 512, 1024)):
        subset = valid[torch.randperm(n_valid, generator=utils.make_generator(3))[:size].sort().values]
        partial = score(subset)
        result[str(size)] = {'spearman': spearman(full, partial),
                             'same_best': max(range(len(full)), key=full.__getitem__) ==
                             max(range(len(partial)), key=partial.__getitem__)}
    return result


BENCHMARKS = {'supernet_train': bench_supernet_train, 'fitness': bench_fitness, 'augment': bench_augment,
              'evalnet_train': bench_evalnet_train, 'generation': bench_generation,
              'nb201_train': lambda *a: bench_supernet_train(*a, supernet=nb201_supernet),
              'nb201_fitness': lambda *a: bench_fitness(*a, supernet=nb201_supernet)}
# The measurements each full-search projection reads: (label, training step, fitness).
PROJECTIONS = {'projection': ('DARTS space', 'supernet_train', 'fitness'),
               'nb201_projection': ('NAS-Bench-201', 'nb201_train', 'nb201_fitness')}
EXTRA = {'fitness_scaling': fitness_scaling, 'valid_size_ranking': valid_size_ranking}  # run only when named


def _sizes(quick: bool, device: torch.device) -> Dict:
    if quick:
        return {'C': 4, 'layers': 3, 'batch': 16, 'fitness_batch': 32, 'augment_images': 256, 'eval_C': 4,
                'eval_layers': 3, 'eval_batch': 16, 'gen_images': 64, 'gen_C': 4, 'gen_layers': 3, 'gen_pop': 2,
                'nb201_C': 4, 'nb201_N': 1}
    return {'C': 16, 'layers': 8, 'batch': 64, 'fitness_batch': 1024 if device.type == 'cuda' else 256,
            'augment_images': 5000, 'eval_C': 36, 'eval_layers': 20, 'eval_batch': 96,
            'gen_images': 512, 'gen_C': 8, 'gen_layers': 5, 'gen_pop': 4, 'nb201_C': 16, 'nb201_N': 5}


def _in_child(args, name: str, label: str) -> Dict:
    """Run one measurement in a fresh Python process with the same options."""
    command = [sys.executable, os.path.abspath(__file__), '--device', args.device, '--warmup', str(args.warmup),
               '--repeats', str(args.repeats), '--one', name, label]
    command += (['--quick'] * args.quick + ['--amp'] * args.amp + ['--compile'] * args.compile
                + ['--ablate'] * args.ablate)
    command += ['--threads', str(args.threads)] if args.threads else []
    command += ['--cudnn_benchmark'] * args.cudnn_benchmark
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith('RESULT ')]
    if done.returncode != 0 or not lines:
        raise utils.UserError(f"benchmark {name} [{label}] failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(lines[-1][len('RESULT '):])


def projected_search_hours(results: Dict, variant: str, train_key: str = 'supernet_train',
                           fitness_key: str = 'fitness') -> float:
    """The paper's search (50 x 50, 25k + 25k images) from the measured step and fitness throughputs."""
    train = results.get(train_key, {}).get(variant, {}).get('images_per_sec')
    fitness = results.get(fitness_key, {}).get(variant, {}).get('images_per_sec')
    if not train or not fitness:
        return math.nan
    per_generation = (FULL_SEARCH['train_images'] / train
                      + FULL_SEARCH['pop_size'] * FULL_SEARCH['valid_images'] / fitness)
    return per_generation * FULL_SEARCH['generations'] / 3600


def over_rounds(runs: List[Dict]) -> Dict:
    """One variant's measurements from several rounds: the median of each figure, the largest peak memory, and
    the rounds themselves."""
    if len(runs) == 1:
        return runs[0]
    out = {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != 'peak_mb'}
    if any('peak_mb' in run for run in runs):
        out['peak_mb'] = max(run.get('peak_mb', 0) for run in runs)
    return {**out, 'rounds': runs}


def speedup(by_variant: Dict, metric: str, variant: str = 'fast', base: str = 'paper_exact') -> float:
    """variant against base: the median over rounds of each round's ratio (a throughput's, or a time's
    inverse), so that both sides of every ratio were measured at about the same time."""
    exact, other = by_variant.get(base), by_variant.get(variant)
    if not exact or not other:
        return math.nan
    ratios = [(e[metric] / o[metric] if metric.startswith('seconds') else o[metric] / e[metric])
              for e, o in zip(exact.get('rounds', [exact]), other.get('rounds', [other]))]
    return statistics.median(ratios)


def format_table(results: Dict, variants: List[str]) -> str:
    width = max(16, *(len(v) + 2 for v in variants))
    header = (f"{'benchmark':<16}" + ''.join(f"{v:>{width}}" for v in variants)
              + f"{'fast/exact':>12}{'peak MB (exact/fast)':>24}")
    lines = [header, '-' * len(header)]
    for name, by_variant in results.items():
        if name in PROJECTIONS:
            continue
        metric = _metric(name)
        cells = []
        for v in variants:
            value = by_variant.get(v, {}).get(metric)
            cells.append(f"{value:>{width}.1f}" if value is not None else f"{'-':>{width}}")
        peaks = [by_variant.get(v, {}).get('peak_mb') for v in ('paper_exact', 'fast')]
        peak = '/'.join(f"{p:.0f}" if p else '-' for p in peaks)
        unit = ' s/gen' if metric.startswith('seconds') else ' img/s'
        lines.append(f"{name + unit:<16}" + ''.join(cells) + f"{speedup(by_variant, metric):>11.2f}x{peak:>24}")
    ablated = [v for v in variants if v.startswith('no_')]
    if ablated:
        lines += ['', "what each setting earns: fast / fast with that setting off (median of the rounds' ratios)"]
        for name, by_variant in results.items():
            if name not in PROJECTIONS and any(v in by_variant for v in ablated):
                lines.append(f"{name:<16}" + ', '.join(f"{v[3:]} {speedup(by_variant, _metric(name), 'fast', v):.3f}x"
                                                       for v in ablated if v in by_variant))
    for key, (label, _, _) in PROJECTIONS.items():
        if results.get(key):
            lines.append('')
            lines.append(f'projected full {label} search (50 generations x 50 individuals, CIFAR-10): ' + ', '.join(
                f"{v} {h:.1f} h" for v, h in results[key].items() if not math.isnan(h)))
    return '\n'.join(lines)


def _metric(name: str) -> str:
    return 'seconds_per_generation' if name == 'generation' else 'images_per_sec'


def main(args: argparse.Namespace) -> Dict:
    device = devices.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    # As a default search runs (cuDNN's deterministic kernels), unless --cudnn_benchmark measures the faster ones.
    devices.configure_cudnn(device, args.cudnn_benchmark)
    sizes = _sizes(args.quick, device)
    variants = _variants(args, device)
    names = [n.strip() for n in args.only.split(',') if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS and n not in EXTRA]
    if unknown:
        raise utils.UserError(f"unknown benchmark(s) {', '.join(unknown)}; "
                              f"known: {', '.join(list(BENCHMARKS) + list(EXTRA))}")
    if args.one:  # a child process: one measurement, printed as JSON
        name, label = args.one
        print('RESULT ' + json.dumps(BENCHMARKS[name](args, device, variants[label], sizes)))
        return {}
    results: Dict = {}
    extra = {}
    for name in [n for n in names if n in EXTRA]:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        extra[name] = EXTRA[name](args, device, sizes)
    for name in [n for n in names if n in BENCHMARKS]:
        # The augmentation is the same for every variant of the fast defaults: only paper-exact and fast.
        labels = [label for label in variants if name != 'augment' or label in ('paper_exact', 'fast')]
        runs = {label: [] for label in labels}
        for round_ in range(args.rounds):
            for label in labels:
                print(f"running {name} [{label}]" + (f" round {round_ + 1}" if args.rounds > 1 else '') + ' ...',
                      file=sys.stderr, flush=True)
                runs[label].append(BENCHMARKS[name](args, device, variants[label], sizes) if args.in_process
                                   else _in_child(args, name, label))
        results[name] = {label: over_rounds(runs[label]) for label in labels}
    # A projection from --quick's tiny sizes would say nothing about the paper's search.
    for key, (_, train_key, fitness_key) in PROJECTIONS.items():
        projection = {} if args.quick else {v: projected_search_hours(results, v, train_key, fitness_key)
                                            for v in variants}
        if any(not math.isnan(hours) for hours in projection.values()):
            results[key] = projection
    meta = {'device': str(device), 'device_name': torch.cuda.get_device_name(device) if device.type == 'cuda'
            else (os.uname().machine if hasattr(os, 'uname') else 'cpu'), 'torch': torch.__version__,
            'threads': torch.get_num_threads(), 'sizes': sizes, 'warmup': args.warmup, 'repeats': args.repeats,
            'rounds': args.rounds,
            'configs': {k: v['config'].describe() + (' + amp' if v['amp'] else '')
                        + (' + compile' if v['compile'] else '') for k, v in variants.items()}}
    print(f"device {meta['device']} ({meta['device_name']}), torch {meta['torch']}, {meta['threads']} threads")
    for label, description in meta['configs'].items():
        print(f"  {label}: {description}")
    if results:
        print(format_table(results, list(variants)))
    if 'valid_size_ranking' in extra:
        ranking = extra['valid_size_ranking']
        print(f"ranking {ranking['population']} individuals on a --valid_size subset vs all {ranking['valid_images']} "
              "held-out images: " + ', '.join(f"{k}: Spearman {v['spearman']:.2f}"
                                              f"{', same best' if v['same_best'] else ''}"
                                              for k, v in ranking.items() if isinstance(v, dict)))
    if 'fitness_scaling' in extra:
        scaling = extra['fitness_scaling']
        print(f"fitness evaluation per generation, 1 thread per process: "
              f"1 process {scaling[1]['fitness_seconds']:.1f} s, "
              f"2 processes {scaling[2]['fitness_seconds']:.1f} s ({scaling['ratio']:.2f}x the time)")
    speedups = {name: {v: speedup(by_variant, _metric(name), v) for v in variants if v != 'paper_exact'}
                for name, by_variant in results.items() if name not in PROJECTIONS}
    results.update(extra)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'meta': meta, 'results': results, 'speedups': speedups}, f, indent=1)
    return {'meta': meta, 'results': results, 'speedups': speedups}


if __name__ == '__main__':
    sys.exit(stopping.run_main(main, parse_args()))
