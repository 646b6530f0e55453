"""What a person with a GPU runs first: does this project compute correctly on this device, and how fast?

    python gpu_check.py --quick                 # at most a few minutes on one H100-class GPU
    python gpu_check.py --full                  # adds each speed setting switched off alone, the compiled fitness
                                                # network, two real generations of a paper-size search on
                                                # generated data, and the quick start
    python gpu_check.py --small --device cpu    # tiny sizes, seconds: what the tests run, so it cannot rot unseen

It reports (gpu_check.json and gpu_check.md in --out, default gpu_check/):
  - the device: GPU, driver, CUDA, cuDNN and torch versions, and what float32 means here (TF32 or not);
  - agreement on the same weights: the fast defaults, and bf16 autocast, against paper-exact float32 (logits,
    loss, gradients) for a supernet training step and a fitness forward, with the tolerances that judge them;
  - ranking: the Kendall tau between bf16 and float32 fitness over a small population on a briefly trained
    supernet (what bf16 fitness would change about a search's choices);
  - cost per training step: host synchronisations (CUDA's sync debug mode) and kernels (the profiler);
  - peak memory of a training step and of a fitness batch at the paper's sizes;
  - determinism: two identical short trainings from the same seed give the same bits (or do not);
  - speed: training steps and fitness batches at the paper's sizes, and the projected seconds per generation
    and hours of the paper's 50 x 50 search.
Exit status 1 when a check that has a tolerance fails; 0 otherwise (the figures are there to read).
"""
import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

import bench
import speed
import utils
from architect_evolution import darts_shapes, decode, init_population
from cli import arguments
from engine import Monitor, OptimizerStep, evaluate_population, train_generation
from inputs.data import make_synthetic
from inputs.loaders import TensorLoader
from model_search import Network
from runtime import devices, stopping
from runtime.checkpoint import atomic_write_text
from runtime.memory import peak_memory
from runtime.settings import Augment
from stats import rank_stats

# The paper's search: C=16, 8 layers, batch 64; fitness batches of 1024 (EvNAS), 25,000 + 25,000 images.
PAPER = {'C': 16, 'layers': 8, 'batch': 64, 'fitness_batch': 1024, 'image': 32, 'population': 8, 'train_steps': 50,
         'fitness_passes': 5, 'warm_steps': 30}
SMALL = {'C': 4, 'layers': 3, 'batch': 8, 'fitness_batch': 32, 'image': 16, 'population': 4, 'train_steps': 3,
         'fitness_passes': 2, 'warm_steps': 3}
# Agreement with paper-exact float32 on the same weights. float32 paths differ by summation order (and on GPUs by
# TF32 convolutions in the fast defaults); bf16 keeps 8 bits of mantissa.
# Gradients are judged by the median over parameters of each one's relative error (the worst one is reported).
TOLERANCE = {'fast': {'logits': 1e-2, 'loss': 1e-3, 'gradients': 2e-2, 'fitness_logits': 1e-2}}
BF16_MARGIN = 1.5  # the fast path under bf16: at most 1.5x as far from float32 as paper-exact under bf16 (+ the above)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = arguments.ArgumentParser('gpu_check', description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--quick', action='store_true', help='the checks and the timing at the paper\'s sizes (default)')
    mode.add_argument('--full', action='store_true',
                      help='--quick, plus each speed setting off alone, two real generations, and the quick start')
    mode.add_argument('--small', action='store_true', help='tiny sizes (for a CPU, and the tests)')
    parser.add_argument('--device', type=str, default='auto', help='auto, cpu, cuda or cuda:N (default: auto)')
    parser.add_argument('--out', type=str, default='gpu_check',
                        help='where the JSON and Markdown go (default: gpu_check)')
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> Dict:
    device = devices.resolve_device(args.device)
    sizes = SMALL if args.small else PAPER
    devices.configure_cudnn(device, benchmark=False)  # as a default search runs
    started = time.time()
    report = {'mode': 'small' if args.small else 'full' if args.full else 'quick', 'device': environment(device),
              'sizes': sizes}
    report['agreement'] = agreement(device, sizes)
    report['ranking'] = bf16_ranking(device, sizes)
    report['cost_per_step'] = cost_per_step(device, sizes)
    report['determinism'] = determinism(device, sizes)
    report['speed'] = timing(device, sizes)
    if args.full:
        report['ablation'] = ablation(device, sizes)
        report['compiled_fitness'] = compiled_fitness(device, sizes)
        report['generations'] = real_generations(device)
        report['quick_start'] = quick_start(device)
    report['seconds'] = time.time() - started
    failed = [f"{name}: {', '.join(check['failed'])}" for name, check in report['agreement'].items() if check['failed']]
    report['passed'] = not failed
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(os.path.join(args.out, 'gpu_check.json'), json.dumps(_finite(report), indent=1) + '\n')
    text = markdown(report)
    atomic_write_text(os.path.join(args.out, 'gpu_check.md'), text)
    print(text)
    if failed:
        print(f"error: agreement outside its tolerance ({'; '.join(failed)}): see "
              f"{os.path.join(args.out, 'gpu_check.md')}", file=sys.stderr)
        raise SystemExit(1)
    return report


# ----------------------------------------------------------------------------------------------------------
# The checks

def environment(device: torch.device) -> Dict:
    info = {'device': str(device), 'torch': torch.__version__, 'python': platform.python_version(),
            'float32': speed.float32_policy(speed.default_config(device), device)}
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info.update({'gpu': props.name, 'capability': f"{props.major}.{props.minor}",
                     'memory_gb': round(props.total_memory / 2 ** 30, 1), 'cuda': torch.version.cuda,
                     'cudnn': torch.backends.cudnn.version(), 'bf16': torch.cuda.is_bf16_supported(),
                     'driver': _driver()})
    else:
        info['cpu'] = platform.processor() or platform.machine()
        info['cpu_capability'] = torch.backends.cpu.get_cpu_capability()
    return info


def _driver() -> str:
    try:
        done = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                              capture_output=True, text=True, timeout=30)
        return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else 'unknown'
    except (OSError, subprocess.SubprocessError):
        return 'unknown (no nvidia-smi)'


def _supernet(sizes: Dict, config: speed.SpeedConfig, device) -> nn.Module:
    model = Network(sizes['C'], 10, sizes['layers'], impl=speed.layers(config))
    return model.to(device, memory_format=config.memory_format)


def _batch(sizes: Dict, batch: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, sizes['image'], sizes['image'], generator=g)
    return x.to(device), torch.randint(0, 10, (batch,), generator=g).to(device)


def agreement(device: torch.device, sizes: Dict) -> Dict:
    """The fast defaults in float32, and under bf16 autocast, against paper-exact float32 on the same weights and
    batch: a training step (logits, loss, gradients) and a fitness forward (train-mode BatchNorm, no gradient).

    float32 is judged by fixed tolerances. bf16 rounds every product to 8 bits, and how far that moves the
    gradients of a network depends on the network and the batch, so bf16 is judged against what bf16 does to the
    paper-exact path on the same step: the fast path's errors may be at most BF16_MARGIN times those."""
    speed.configure_process(speed.PAPER_EXACT)
    torch.manual_seed(0)
    exact = _supernet(sizes, speed.PAPER_EXACT, device)
    alphas = [a.to(device) for a in decode(init_population(1, darts_shapes(4), utils.make_generator(1))[0].alphas)]
    exact.set_arch_parameters(alphas)
    state = {k: v.clone() for k, v in exact.state_dict().items()}
    x, y = _batch(sizes, sizes['batch'], device)
    reference = _step(exact, x, y, None)
    bf16 = devices.mixed_precision(device, True)[0]
    exact_bf16 = _figures(_step(exact, x, y, bf16), reference)
    out = {}
    for name, autocast in (('fast', None), ('bf16', bf16)):
        config = speed.default_config(device)
        speed.configure_process(config)
        model = _supernet(sizes, config, device)
        model.load_state_dict(state)
        model.set_arch_parameters(alphas)
        figures = _figures(_step(model, x.contiguous(memory_format=config.memory_format), y, autocast), reference)
        limits = dict(TOLERANCE['fast']) if name == 'fast' else \
            {k: BF16_MARGIN * exact_bf16[k] + TOLERANCE['fast'][k] for k in TOLERANCE['fast']}
        out[name] = {'figures': figures, 'tolerance': limits,
                     'failed': [k for k, limit in limits.items() if not figures[k] <= limit]}
        if name == 'bf16':
            out[name]['paper_exact_bf16'] = exact_bf16
    return out


def _figures(result: Dict, reference: Dict) -> Dict:
    """How far a step is from the reference step: the largest logit difference, the loss's relative difference,
    the median and the worst relative error of a parameter's gradient (those whose norm is not negligible), and
    the largest fitness-forward logit difference."""
    errors = [((result['grads'][n] - g).norm() / g.norm()).item()
              for n, g in reference['grads'].items() if g.norm() > 1e-3 * reference['grad_scale']]
    return {'logits': (result['logits'] - reference['logits']).abs().max().item(),
            'loss': abs(result['loss'] - reference['loss']) / abs(reference['loss']),
            'gradients': statistics.median(errors), 'worst_gradient': max(errors),
            'fitness_logits': (result['fitness'] - reference['fitness']).abs().max().item()}


def _step(model: nn.Module, x, y, autocast) -> Dict:
    model.train()
    model.zero_grad(set_to_none=True)
    with (autocast() if autocast else torch.autocast(x.device.type, enabled=False)):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.float(), y)
    loss.backward()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    with torch.no_grad(), (autocast() if autocast else torch.autocast(x.device.type, enabled=False)):
        fitness = model(x).float()
    return {'logits': logits.detach().float(), 'loss': loss.item(), 'grads': grads, 'fitness': fitness,
            'grad_scale': max(g.norm().item() for g in grads.values())}


def _trained_supernet(device, sizes: Dict):
    """A supernet trained for a few steps on generated images, its population and a fitness loader."""
    config = speed.default_config(device)
    speed.configure_process(config)
    torch.manual_seed(0)
    model = _supernet(sizes, config, device)
    array = make_synthetic(True, 2 * sizes['batch'] * sizes['warm_steps'], image_size=sizes['image']).to(device)
    half = len(array) // 2
    indices = torch.arange(len(array))
    train = TensorLoader(array, sizes['batch'], indices[:half], shuffle=True, augment=Augment(),
                         generator=utils.make_generator(1), memory_format=config.memory_format)
    valid = TensorLoader(array, sizes['fitness_batch'], indices[half:], shuffle=True, augment=Augment(),
                         generator=utils.make_generator(2), memory_format=config.memory_format)
    population = init_population(sizes['population'], darts_shapes(4), utils.make_generator(0))
    decoded = [[a.to(device) for a in decode(ind.alphas)] for ind in population]
    optimize = OptimizerStep(bench._sgd(model), grad_clip=5.)
    train_generation(model, decoded, train, optimize, Monitor(report_freq=10 ** 9), generation=1)
    return model, population, decoded, valid, optimize, train


def bf16_ranking(device: torch.device, sizes: Dict) -> Dict:
    """Kendall tau-b between float32 and bf16 fitness of the same population on the same supernet and images."""
    model, population, decoded, valid, _, _ = _trained_supernet(device, sizes)
    seeds = list(range(len(population)))
    scores = {}
    for name, autocast in (('float32', None), ('bf16', devices.mixed_precision(device, True)[0])):
        evaluate_population(model, population, decoded, valid, seeds, Monitor(), generation=1,
                            **({} if autocast is None else {'autocast': autocast}))
        scores[name] = [ind.fitness for ind in population]
    return {'fitness': scores, 'kendall_tau_b': rank_stats.kendall_tau_b(scores['float32'], scores['bf16']),
            'note': 'agreement of the two rankings on one briefly trained supernet; trust.py --estimators '
                    'original,bf16 measures each against a stand-alone reference'}


def _step_and_forward(device, sizes: Dict, config: speed.SpeedConfig):
    """(supernet, one training step of it on a batch of --batch images, one fitness forward of a batch of
    fitness_batch images) with a decoded individual's alphas, built for `config`."""
    model = _supernet(sizes, config, device)
    model.set_arch_parameters([a.to(device) for a in decode(init_population(1, darts_shapes(4),
                                                                             utils.make_generator(0))[0].alphas)])
    optimize = OptimizerStep(bench._sgd(model), grad_clip=5.)
    x, y = _batch(sizes, sizes['batch'], device)
    x = x.contiguous(memory_format=config.memory_format)
    fitness_x = _batch(sizes, sizes['fitness_batch'], device, seed=1)[0].contiguous(memory_format=config.memory_format)

    def step():
        optimize(nn.functional.cross_entropy(model(x).float(), y))

    @torch.no_grad()
    def forward():
        model(fitness_x)

    return model, step, forward


def cost_per_step(device: torch.device, sizes: Dict) -> Dict:
    """Host synchronisations and kernels (operators on a CPU) of one supernet training step, and peak memory of a
    training step and of a fitness batch."""
    config = speed.default_config(device)
    _, step, forward = _step_and_forward(device, sizes, config)

    step()  # warm-up: first-call allocations and cuDNN plans are not the steady state
    out = {}
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            torch.cuda.set_sync_debug_mode('warn')
            try:
                step()
            finally:
                torch.cuda.set_sync_debug_mode('default')
        out['host_syncs'] = sum('synchroniz' in str(w.message) for w in caught)
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CUDA] if device.type == 'cuda' else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        step()
        bench._sync(device)
    events = prof.events()
    if device.type == 'cuda':
        out['kernels'] = sum(1 for e in events if str(getattr(e, 'device_type', '')).endswith('CUDA'))
    else:
        out['operators'] = sum(1 for e in events if e.name.startswith('aten::'))
    memory = {}
    with peak_memory(device, memory):
        step()
        bench._sync(device)
    out['training_step_peak_mb'] = memory.get('peak_mb', math.nan)
    memory = {}
    with peak_memory(device, memory):
        forward()
        bench._sync(device)
    out['fitness_batch_peak_mb'] = memory.get('peak_mb', math.nan)
    return out


def determinism(device: torch.device, sizes: Dict) -> Dict:
    """Two identical short trainings from the same seed (cuDNN's deterministic kernels, as a default search)."""
    digests = []
    for _ in range(2):
        torch.manual_seed(0)
        model, *_ = _trained_supernet(device, sizes)
        state = model.state_dict()
        digests.append(hashlib.sha256(b''.join(state[k].detach().cpu().numpy().tobytes() for k in sorted(state)))
                       .hexdigest())
    return {'same_bits': digests[0] == digests[1], 'sha256': digests}


def timing(device: torch.device, sizes: Dict, config: speed.SpeedConfig = None) -> Dict:
    """Training steps and fitness batches at `sizes`, and the paper's search projected from them."""
    config = config or speed.default_config(device)
    speed.configure_process(config)
    torch.manual_seed(0)
    _, step, forward = _step_and_forward(device, sizes, config)
    step_s = bench.median_seconds(step, device, warmup=3, repeats=sizes['train_steps'])
    fitness_s = bench.median_seconds(forward, device, warmup=1, repeats=sizes['fitness_passes'])
    search = bench.FULL_SEARCH
    generation_s = (search['train_images'] / sizes['batch'] * step_s
                    + search['pop_size'] * search['valid_images'] / sizes['fitness_batch'] * fitness_s)
    return {'seconds_per_training_step': step_s, 'seconds_per_fitness_batch': fitness_s,
            'training_images_per_sec': sizes['batch'] / step_s,
            'fitness_images_per_sec': sizes['fitness_batch'] / fitness_s,
            'projected_seconds_per_generation': generation_s,
            'projected_search_hours': generation_s * search['generations'] / 3600,
            'projection': "the paper's search: 50 generations of 25,000 training images and 50 x 25,000 fitness "
                          "images, from these sizes' step and batch times"}


def ablation(device: torch.device, sizes: Dict) -> Dict:
    """timing() with each setting of the device's defaults switched off alone, and paper-exact."""
    fast = speed.default_config(device)
    variants = {'fast': fast, 'paper_exact': speed.PAPER_EXACT}
    # A process-wide setting (speed.PROCESS_SETTINGS) cannot be switched off again in the same process.
    variants.update({f'no_{name}': fast.without(name) for name in speed.SETTINGS
                     if getattr(fast, name) and name not in speed.PROCESS_SETTINGS})
    return {name: timing(device, sizes, config) for name, config in variants.items()}


def compiled_fitness(device: torch.device, sizes: Dict, backend: str = 'inductor') -> Dict:
    """A fitness batch through speed.compiled (what --compile_fitness runs) against the eager fast defaults on
    the same weights: the first call's seconds (compiling), then seconds per batch, and the logits' largest
    difference. A search compiles a second graph for the short last batch, as long again."""
    config = speed.default_config(device)
    speed.configure_process(config)
    torch.manual_seed(0)
    model, _, forward = _step_and_forward(device, sizes, config)
    x = _batch(sizes, sizes['fitness_batch'], device, seed=1)[0].contiguous(memory_format=config.memory_format)
    net = speed.compiled(model, backend)
    with torch.no_grad():
        started = time.perf_counter()
        logits = net(x)
        bench._sync(device)
        compile_s = time.perf_counter() - started
        difference = (logits - model(x)).abs().max().item()
    eager_s = bench.median_seconds(forward, device, warmup=1, repeats=sizes['fitness_passes'])
    compiled_s = bench.median_seconds(torch.no_grad()(lambda: net(x)), device, warmup=1,
                                      repeats=sizes['fitness_passes'])
    return {'backend': backend, 'first_call_seconds': compile_s, 'eager_seconds_per_batch': eager_s,
            'compiled_seconds_per_batch': compiled_s, 'speedup': eager_s / compiled_s,
            'max_logit_difference': difference}


def real_generations(device: torch.device) -> Dict:
    """Two generations of the paper's search on generated images (50,000, split in halves), timed by the search."""
    import train_search
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, 'run')
        result = train_search.main(train_search.parse_args(
            ['--dataset', 'synthetic', '--synthetic_size', '50000', '--epochs', '2', '--device', str(device),
             '--report_freq', '100', '--run_dir', run_dir]))
    return {'generations': [{k: h[k] for k in ('generation', 'train_seconds', 'fitness_seconds', 'best')}
                            for h in result['history']]}


def quick_start(device: torch.device) -> Dict:
    """The README's quick start on this device, each command timed."""
    commands = [
        ['train_search.py', '--dataset', 'synthetic', '--synthetic_size', '512', '--init_channels', '4',
         '--layers', '5', '--pop_size', '4', '--tsize', '2', '--epochs', '3', '--batch_size', '32',
         '--valid_batch_size', '256'],
        ['train.py', '--dir', '{tmp}/search', '--dataset', 'synthetic', '--init_channels', '8', '--layers', '5',
         '--epochs', '3', '--auxiliary', '--cutout'],
    ]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for command, run in zip(commands, ('search', 'eval')):
            argv = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), command[0])]
            argv += [a.format(tmp=tmp) for a in command[1:]] + ['--device', str(device), '--run_dir', f"{tmp}/{run}"]
            started = time.time()
            done = subprocess.run(argv, capture_output=True, text=True)
            out.append({'command': ' '.join(command[:1]), 'returncode': done.returncode,
                        'seconds': time.time() - started, 'error': done.stderr.strip().splitlines()[-1:]})
    return {'commands': out}


# ----------------------------------------------------------------------------------------------------------
# The report

def _finite(value):
    if isinstance(value, float):
        return utils.json_number(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def markdown(report: Dict) -> str:
    d = report['device']
    name = d.get('gpu', d.get('cpu', d['device']))
    lines = [f"# gpu_check ({report['mode']}): {name}", '',
             '| | |', '| --- | --- |'] + [f"| {k} | {v} |" for k, v in d.items()] + ['']
    lines += ['## Agreement with paper-exact float32 (same weights and batch)', '',
              '| path | logits | loss (relative) | gradients (relative, median; worst) | fitness logits | verdict |',
              '| --- | --- | --- | --- | --- | --- |']
    for path, check in report['agreement'].items():
        f, t = check['figures'], check['tolerance']
        lines.append(f"| {path} | {f['logits']:.2e} (<= {t['logits']:.2g}) | {f['loss']:.2e} (<= {t['loss']:.2g}) | "
                     f"{f['gradients']:.2e} (<= {t['gradients']:.2g}); {f['worst_gradient']:.2e} | "
                     f"{f['fitness_logits']:.2e} (<= {t['fitness_logits']:.2g}) | "
                     + ('ok' if not check['failed'] else 'FAILED: ' + ', '.join(check['failed'])) + ' |')
    ranking = report['ranking']
    lines += ['', f"bf16 against float32 fitness over {len(ranking['fitness']['float32'])} individuals: Kendall tau-b "
                  f"{_text(ranking['kendall_tau_b'])}.", '']
    cost = report['cost_per_step']
    lines += ['## One training step', '', '| | |', '| --- | --- |'] + [f"| {k} | {_text(v)} |" for k, v in cost.items()]
    det = report['determinism']
    lines += ['', f"Two identical short trainings: {'the same bits' if det['same_bits'] else 'DIFFERENT bits'}.", '']
    s = report['speed']
    lines += ['## Speed (the fast defaults)', '', '| | |', '| --- | --- |'] + \
        [f"| {k} | {_text(v)} |" for k, v in s.items() if k != 'projection'] + ['', s['projection'] + '.', '']
    if 'ablation' in report:
        lines += ['## Each setting off alone', '',
                  '| variant | training images/s | fitness images/s | projected hours |',
                  '| --- | --- | --- | --- |']
        lines += [f"| {name} | {v['training_images_per_sec']:.0f} | {v['fitness_images_per_sec']:.0f} | "
                  f"{v['projected_search_hours']:.2f} |" for name, v in report['ablation'].items()]
    if 'compiled_fitness' in report:
        c = report['compiled_fitness']
        lines += ['', f"A fitness batch compiled (`--compile_fitness`, {c['backend']}): first call "
                      f"{c['first_call_seconds']:.1f} s, then {c['compiled_seconds_per_batch'] * 1e3:.1f} ms against "
                      f"{c['eager_seconds_per_batch'] * 1e3:.1f} ms eager ({c['speedup']:.2f}x); logits within "
                      f"{c['max_logit_difference']:.1e}."]
    if 'generations' in report:
        lines += ['', '## Two real generations (generated data, paper sizes)', '',
                  '| generation | training s | fitness s |', '| --- | --- | --- |']
        lines += [f"| {g['generation']} | {g['train_seconds']:.1f} | {g['fitness_seconds']:.1f} |"
                  for g in report['generations']['generations']]
    if 'quick_start' in report:
        lines += ['', '## The quick start', ''] + [f"- `{c['command']}`: exit {c['returncode']}, {c['seconds']:.0f} s"
                                                    for c in report['quick_start']['commands']]
    lines += ['', f"{report['seconds']:.0f} s in all; " + ('every check within its tolerance.' if report['passed']
                                                           else 'a check FAILED (above).'), '']
    return '\n'.join(lines)


def _text(value) -> str:
    if isinstance(value, float):
        return 'n/a' if math.isnan(value) else f"{value:.4g}"
    return str(value)


if __name__ == '__main__':
    sys.exit(stopping.run_main(main, parse_args()))
