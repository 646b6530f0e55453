"""EvNAS search: evolve a population of architectures that share the weights of one supernet, in the DARTS
cell space (--space darts, the default) or in NAS-Bench-201 (--space nb201).

Each generation (Sinha & Chen, GECCO 2021, Alg. 1):
  1. train the supernet for one epoch on the first half of the training set, step i using the decoded
     architecture of individual i mod pop_size;
  2. measure every individual's fitness (top-1 accuracy of its decoded architecture) on the held-out half;
  3. keep the elites, fill the rest with mutated crossover children of tournament winners.
The best individual of the last generation is the result: RUN_DIR/genotype.json, for train.py.

--strategy random runs the same loop without step 3, each generation drawn afresh as the first: the baseline
that says whether the evolution was worth it. At its end every architecture it drew is scored on the final
supernet (random search with weight sharing, search/random_search.py).

Examples:
    # the paper's search (CIFAR-10, 50 individuals, 50 generations)
    python train_search.py --cutout
    # what it takes on this device (memory per phase, time, disk), before the data is downloaded
    python train_search.py --cutout --plan
    # a CPU quick-start on generated data (about a minute)
    python train_search.py --dataset synthetic --init_channels 4 --layers 5 --pop_size 4 --tsize 2 --epochs 3 \\
        --valid_batch_size 256 --device cpu --run_dir search-quick
    # continue an interrupted run where its last completed generation ended
    python train_search.py --resume search-quick
    # the same budget of supernet training and fitness calls without selection, as a baseline
    python train_search.py --strategy random --cutout
    # the original's NAS-Bench-201 search (searchNAS201.sh), with the benchmark's true accuracies
    python train_search.py --space nb201 --cutout --track_running_stats --dataset cifar10 \\
        --api_path NAS-Bench-201-v1_1-096897.pth

RUN_DIR holds log.txt, args.json, generations/gen_NNN.json (every individual's fitness, loss, genotype (or
NAS-Bench-201 arch string) and alphas), genotype.json (the best architecture), report.md and checkpoint.pt
(what --resume needs).
"""
import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

import fitness
import report
import speed
import utils
from architect_evolution import Individual, NoFeasibleDraw, evolve, init_population, random_population, sort_population
from cli import arguments, search_arguments
from cli.search_arguments import RESUME_MAY_CHANGE, SearchSettings, search_settings
from cost import count_macs
from engine import Monitor, OptimizerStep, train_generation
from inputs import nb201
from inputs.data import SearchData, random_images, save_dataset_info
from inputs.loaders import Loader, make_loader
from inputs.nb201 import WHERE as BENCHMARK_WHERE
from inputs.nb201 import Benchmark
from runtime import devices, logs, memory, stopping
from runtime import plan as run_plan
from runtime.checkpoint import atomic_save, load_run_checkpoint, restore_run, rng_state
from runtime.run_dirs import save_args
from runtime.stopping import fault_point
from search import latency, random_search
from search.budget import Budget
from search.records import Records, population_tau, summarize
from search_space import SearchSpace, get_space

CHECKPOINT_FORMAT = 'evnas-search/1'
# --strategy random under a budget: after this many random architectures in a row that do not fit (under 1 in
# 1,000 fits), the budget is out of random search's reach; each costs a network built on the meta device.
MAX_REJECTED = 1000


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return search_arguments.parse_args(argv, __doc__)


# ----------------------------------------------------------------------------------------------------------
# The search

def main(args: argparse.Namespace) -> Dict:
    settings = search_settings(args)
    if args.plan:
        return plan(args, settings)

    def body(inputs, run_dir, dist, device, stop):
        return search(args, settings, inputs, run_dir, stop, dist, device)
    return devices.run(arguments.run_settings(args), 'search', 'train_search',
                       lambda device: load_search_inputs(settings, args.api_path), body)


def search(args: argparse.Namespace, settings: SearchSettings, inputs: 'SearchInputs', run_dir: str,
           stop: stopping.StopSignals, dist: devices.Distributed, device: torch.device) -> Dict:
    """EvNAS, Alg. 1: per generation decode -> train -> evaluate -> rank -> record -> evolve -> checkpoint.
    `args` are what args.json and the checkpoint keep; what the search computes with is `settings`."""
    loaded_mb = memory.resident_mb()  # the data is loaded, nothing built yet
    logger = logs.setup_logger('train_search', run_dir if dist.is_main else None, enabled=dist.is_main)
    devices.configure_cudnn(device, args.cudnn_benchmark)
    evolution = settings.evolution
    space = get_space(settings.space)
    logger.info(f"{'resuming' if args.resume else 'starting'} EvNAS search ({space.title}) in {run_dir} on {device}"
                + (f" x {dist.world_size} processes" if dist.enabled else ''))
    logger.info(f"args = {vars(args)}")
    if space.name == 'nb201' and args.api_path is None:
        logger.info(f"no --api_path: the true accuracies of NAS-Bench-201 are not looked up ({BENCHMARK_WHERE})")
    if dist.is_main and not args.resume:
        save_args(run_dir, 'train_search', vars(args))
        os.makedirs(os.path.join(run_dir, 'generations'), exist_ok=True)
        save_dataset_info(run_dir, inputs.data.train, settings.data.dataset, settings.data.data)
        if args.latency_table is not None:  # --resume reads this copy (cli/search_arguments.py)
            latency.copy_into(run_dir, args.latency_table, args.latency_table_sha256)
    run = set_up(settings, inputs.data, dist, device, logger)
    if args.resume:
        restore(run, load_run_checkpoint(run_dir, CHECKPOINT_FORMAT, vars(args), RESUME_MAY_CHANGE), dist.rank)
        logger.info(f"resumed after generation {run.generations_done} of {evolution.generations}")
    if device.type == 'cpu':
        logger.info(f"resident memory once the data was loaded {memory.gb(loaded_mb)}, with the supernet built "
                    f"{memory.gb(memory.resident_mb())}; each generation's peaks are in its record (memory_mb)")
    monitor = Monitor(logger, args.report_freq, stop, dist.all_reduce if dist.enabled else None)
    records = Records(run_dir, dist.is_main, logger, evolution.generations, run.generations_done, space,
                      report.write_report)
    for generation in range(run.generations_done + 1, evolution.generations + 1):
        lr = run.scheduler.get_last_lr()[0]
        if run.draws is not None:
            for individual in run.population:
                run.draws.add(individual.alphas)
        # Decode each individual once per generation; the device copies are reused by every step.
        decoded = [[a.to(device) for a in space.decode(ind.alphas)] for ind in run.population]
        seeds = fitness.draw_seeds(run.measure.estimator, run.data_generator, len(run.population))
        peaks: Dict[str, Dict] = {'train': {}, 'fitness': {}}
        with stopping.note_on_stop(generation - 1, 'generation', run_dir, 'train_search.py', logger):
            started = time.time()
            with memory.peak_memory(device, peaks['train']), training_phase(settings, device):
                train_stats = train_generation(run.model, decoded, run.train_loader, run.optimize, monitor,
                                               generation=generation, net=run.train_net, autocast=run.autocast)
            run.scheduler.step()
            dist.broadcast_buffers(run.model)  # every rank measures fitness with rank 0's BatchNorm statistics
            trained = time.time()
            with memory.peak_memory(device, peaks['fitness']), fitness_phase(settings, device):
                run.measure(run.model, run.population, seeds, monitor, generation, decoded=decoded, rank=dist.rank,
                            world_size=dist.world_size, net=run.eval_net, autocast=run.autocast)
        ranked, order = rank_population(run.population, run.budget)
        summary = summarize(ranked, train_stats, generation, lr, space, train_seconds=trained - started,
                            fitness_seconds=time.time() - trained)
        summary['memory_mb'] = {name: round(peak['peak_mb'], 1) for name, peak in peaks.items() if 'peak_mb' in peak}
        if summary['memory_mb'] and device.type == 'cpu' and loaded_mb is not None:
            summary['memory_mb']['data'] = round(loaded_mb, 1)  # what the peaks are above
        if inputs.benchmark is not None:  # the true accuracies of the generation's best (NAS-Bench-201)
            summary['benchmark'] = inputs.benchmark.lookup(space.genotype(ranked[0].alphas))
            summary['benchmark_tau'] = population_tau(ranked, inputs.benchmark, space)
        run.history.append(summary)
        records.write(generation, ranked, train_stats, summary, order, seeds, run.elapsed_before)
        if generation == evolution.generations:
            run.population = ranked
            records.best(ranked[0])
        else:  # the GA, or without selection (--strategy random) drawn afresh as the first generation
            run.population = (draw_population(evolution.pop_size, run) if run.draws is not None else
                              evolve(ranked, evolution.num_elites, evolution.tsize, evolution.mutate_rate,
                                     run.ga_generator))
            check_agreement(run.population, dist)
        run.generations_done = generation
        with stopping.note_on_stop(generation - 1, 'generation', run_dir, 'train_search.py', logger), \
                stopping.phase('checkpoint', device):
            save_checkpoint(run_dir, args, run, run.elapsed_before + records.timer.elapsed(), dist)
    ended_now = run.generations_done > records.first
    if run.draws is not None and not dist.broadcast_object(random_search.done(run_dir)):
        with stopping.note_on_stop(evolution.generations, 'generation', run_dir, 'train_search.py', logger), \
                fitness_phase(settings, device):
            score_every_draw(settings, run, run_dir, dist, monitor, logger)
        ended_now = True
    return records.finish(run.history, run.population, ended_now)


# ----------------------------------------------------------------------------------------------------------
# Set-up and checkpoints

@dataclass
class SearchInputs:
    """What a search reads before its run directory exists: its images, and the benchmark (NAS-Bench-201 with
    --api_path, on the process that writes the records; else None)."""
    data: SearchData
    benchmark: Optional[Benchmark] = None


@dataclass
class SearchRun:
    """What the generations read and change, and a checkpoint holds."""
    space: SearchSpace    # search_space.DARTS or NB201
    model: nn.Module      # the space's supernet
    train_net: nn.Module  # what a training step calls: the model, or its DDP and/or torch.compile wrapper
    eval_net: nn.Module   # what fitness calls: the model, or its torch.compile wrapper (never DDP)
    optimize: OptimizerStep
    scheduler: torch.optim.lr_scheduler.LRScheduler
    autocast: Callable
    train_loader: Loader
    measure: fitness.FitnessMeasure  # the fitness estimator, its loader and BatchNorm mode
    ga_generator: torch.Generator
    data_generator: torch.Generator
    population: List[Individual]
    shapes: List[Tuple[int, int]]    # of an individual's alpha matrices
    budget: Optional[Budget] = None  # --max_params / --max_macs / --max_latency
    draws: Optional[random_search.Draws] = None  # --strategy random: every architecture drawn
    history: List[Dict] = field(default_factory=list)
    generations_done: int = 0
    elapsed_before: float = 0.


def load_search_inputs(settings: SearchSettings, api_path: Optional[str]) -> SearchInputs:
    """The search's images (split by its space) and the benchmark, read before the run directory exists."""
    utils.seed_everything(settings.loader.seed)
    data = get_space(settings.space).search_data(settings.data, settings.augment)
    if settings.budget.max_latency is not None:  # a table for other classes is refused before the run directory exists
        Budget.of(settings.budget, get_space(settings.space), data.train.num_classes)
    # Only the process that writes the records reads the benchmark (tens of GB of memory for the real file).
    reads_benchmark = api_path is not None and int(os.environ.get('RANK', '0')) == 0
    return SearchInputs(data, Benchmark.open(api_path, settings.data.dataset) if reads_benchmark else None)


def set_up(settings: SearchSettings, data: SearchData, dist: devices.Distributed, device: torch.device,
           logger: logging.Logger) -> SearchRun:
    """The supernet of the space and its optimiser, the loaders, the first population."""
    space, compute, loader = get_space(settings.space), settings.compute, settings.loader
    config = speed.config_for(device, compute.paper_exact)
    speed.configure_process(config)
    model = space.build_supernet(settings.supernet, data.train.num_classes, speed.layers(config))
    model = model.to(device, memory_format=config.memory_format)
    # With several processes each step still trains one individual on a global batch of --batch_size
    # images: every rank takes its share of the batch, and DistributedDataParallel averages the gradients.
    train_net = devices.wrap(model, dist, device, compute.sync_bn)
    if (compute.compile or compute.compile_fitness) and device.type == 'cpu':
        # On a CPU compiling costs far more than it saves (docs/performance.md, --compile).
        logger.warning("--compile on a CPU: compiling can take tens of minutes before the first step, "
                       "for a small gain; leave it off for CPU searches")
    autocast, scaler, precision = devices.mixed_precision(device, compute.amp)
    precision = speed.float32_policy(config, device) if precision == 'fp32' else precision
    optimizer = space.optimizer(model.parameters(), settings.recipe)

    # One set of images trains the supernet, the other measures fitness (augmented as the space says), each
    # pass in a fresh random order (EvNAS's two SubsetRandomSamplers).
    train_data, valid_data = data.train, data.valid
    if loader.loader == 'tensor':  # held once on the device; the loaders index into them
        on_device = train_data.to(device)
        valid_data = on_device if valid_data is train_data else valid_data.to(device)
        train_data = on_device
    ga_generator = utils.make_generator(loader.seed)
    data_generator = utils.make_generator(loader.seed + 1)
    run = SearchRun(
        space=space, model=model, train_net=speed.compiled(train_net) if compute.compile else train_net,
        eval_net=speed.compiled(model) if compute.compile or compute.compile_fitness else model,
        optimize=OptimizerStep(optimizer, settings.recipe.grad_clip, scaler),
        scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(settings.evolution.generations),
                                                             eta_min=settings.recipe.learning_rate_min),
        autocast=autocast,
        train_loader=make_loader(loader.loader, train_data, loader.batch_size, device, data.train_indices,
                                 shuffle=True, augment=settings.augment, generator=data_generator, rank=dist.rank,
                                 world_size=dist.world_size, num_workers=loader.num_workers,
                                 memory_format=config.memory_format),
        measure=fitness.FitnessMeasure(settings.fitness, settings.loader, data, device, config, space,
                                       settings.augment, valid_data=valid_data, train_data=train_data),
        ga_generator=ga_generator, data_generator=data_generator, population=[],
        shapes=space.alpha_shapes(settings.supernet), budget=Budget.of(settings.budget, space, data.train.num_classes),
        draws=random_search.Draws(space) if settings.evolution.strategy == 'random' else None)
    pop_size = settings.evolution.pop_size
    run.population = (draw_population(pop_size, run) if run.draws is not None
                      else init_population(pop_size, run.shapes, ga_generator))
    split = len(data.train_indices)
    compiled = ', compiled' if compute.compile else ', fitness compiled' if compute.compile_fitness else ''
    logger.info(f"{settings.data.dataset}: {split} images train the supernet, {run.measure.loader.num_samples} "
                f"measure fitness ({'training augmentation' if run.measure.augmented else 'test transform'}; "
                f"fitness estimator: {run.measure.estimator.describe()}); "
                f"supernet {utils.count_parameters_in_MB(model):.3f} M parameters; speed: {config.describe()}, "
                f"{precision}{compiled}")
    steps = len(run.train_loader)
    if steps < pop_size:
        # Step i of a generation trains individual i mod pop_size, so the last ones would share the weights
        # without ever training them, and be ranked on weights shaped by the others.
        smaller_batch = (f", --batch_size {split // pop_size} or less" if split >= pop_size else '')
        logger.warning(f"a generation has {steps} training step(s) ({split} images, --batch_size "
                       f"{loader.batch_size}) for {pop_size} individuals: {pop_size - steps} of them never "
                       f"train the supernet; use more images{smaller_batch} or --pop_size {steps} or less")
    if run.budget is not None:
        logger.info(f"budget: {run.budget.describe()}; selection by constraint domination"
                    + ('; every random draw rejected until it fits' if run.draws is not None else ''))
    if run.draws is not None:
        logger.info("strategy: random (no selection: every generation drawn afresh, as the first); at the end every "
                    "architecture drawn is scored on the final supernet (random search with weight sharing)")
    return run


def training_phase(settings: SearchSettings, device: torch.device) -> ContextManager:
    """An out-of-memory in the supernet's training steps as one line: which flags take less."""
    return stopping.phase('supernet training', device, '--batch_size', settings.loader.batch_size,
                          [] if settings.compute.amp else ['--amp'])


def fitness_phase(settings: SearchSettings, device: torch.device) -> ContextManager:
    """An out-of-memory in the fitness evaluation as one line: which flags take less, and that in the DARTS
    space a smaller --valid_batch_size changes the fitness (BatchNorm normalises with each batch's statistics)."""
    lower = [] if settings.fitness.dtype == 'bf16' else ['--fitness_dtype bf16']
    caveat = ("a smaller --valid_batch_size changes the fitness: BatchNorm normalises with each batch's statistics"
              if get_space(settings.space).fitness_train_mode else '')
    return stopping.phase('fitness evaluation', device, '--valid_batch_size', settings.loader.valid_batch_size, lower,
                          caveat)


# ----------------------------------------------------------------------------------------------------------
# --plan: what the run will take, from a few real steps of each phase

# The images of the real datasets, for --plan before they are at hand: (training, held-out) images, classes,
# image size; the DARTS space splits the training set by --train_portion instead.
STAND_INS = {'cifar10': (50000, 0, 10, 32), 'cifar100': (50000, 0, 100, 32),
             ('nb201', 'cifar10'): (25000, 25000, 10, 32), ('nb201', 'cifar100'): (50000, 5000, 100, 32),
             ('nb201', 'ImageNet16-120'): (151700, 3000, 120, 16)}


def plan_search_data(settings: SearchSettings) -> Tuple[SearchData, str]:
    """The search's images, or random ones of their shape and number where the dataset is not at hand."""
    space, data = get_space(settings.space), settings.data
    key = (space.name, data.dataset) if (space.name, data.dataset) in STAND_INS else data.dataset
    if key not in STAND_INS or nb201.at_hand(data.dataset, data.data):
        loaded = space.search_data(data, settings.augment)
        return loaded, (f"{data.dataset}: {len(loaded.train_indices)} images train the supernet, "
                        f"{len(loaded.valid_indices)} measure fitness")
    train, valid, classes, size = STAND_INS[key]
    if not valid:
        train, valid = int(train * data.train_portion), train - int(train * data.train_portion)
    images = random_images(train + valid, classes, size, settings.loader.seed)
    indices = torch.arange(train + valid)
    stand_in = SearchData(images, indices[:train], images, indices[train:],
                          settings.augment if space.fitness_train_mode else None)
    return stand_in, (f"{data.dataset} is not under {data.data} yet: random images of its shape stand in "
                      f"({train} train the supernet, {valid} measure fitness)")


def plan(args: argparse.Namespace, settings: SearchSettings) -> Dict:
    """--plan: build the supernet at the run's sizes on its device, time a few real training steps and fitness
    batches, measure each phase's peak memory, and print what the whole search will take. No file is written."""
    device = devices.resolve_device(args.device)
    world_size, evolution, loader = args.plan, settings.evolution, settings.loader
    utils.seed_everything(loader.seed)
    data, data_note = plan_search_data(settings)
    baseline = memory.resident_mb()
    quiet = logs.setup_logger('train_search.plan', None, enabled=False)
    train_steps = math.ceil(len(data.train_indices) / loader.batch_size)  # each step splits its batch among ranks
    per_process = replace(settings, loader=replace(loader, batch_size=loader.batch_size // world_size))
    run = run_plan.checked_build(lambda: set_up(per_process, data, devices.Distributed(), device, quiet),
                                 'the supernet')
    individual, monitor = run.population[0], Monitor()
    decoded = [[a.to(device) for a in run.space.decode(individual.alphas)]]
    run.model.set_arch_parameters(decoded[0])
    size = data.train.images.shape[-1]
    macs = run_plan.checked_build(lambda: count_macs(run.model, (1, 3, size, size)), 'the supernet')
    fitness_batches = len(run.measure.loader)
    run.measure.loader = run_plan.FirstBatches(run.measure.loader, 1)
    # Fitness first: its increment above the built supernet is then its own, not memory training left behind.
    fitness = run_plan.Phase('fitness evaluation', '--valid_batch_size', loader.valid_batch_size,
                             fitness_batches * evolution.pop_size / world_size,
                             note='(steps: held-out batches x individuals)',
                             changes=("this changes the fitness: in the DARTS space BatchNorm normalises with each "
                                      "held-out batch's statistics" if run.space.fitness_train_mode else ''))
    training = run_plan.Phase('supernet training', '--batch_size', loader.batch_size // world_size, train_steps,
                              shares=world_size,
                              changes='this changes the search: the supernet trains on other batches, more steps')
    with fitness_phase(settings, device):
        run_plan.measure(fitness, device, lambda i: run.measure(
            run.model, [individual], [i], monitor, 1, decoded=decoded, net=run.eval_net, autocast=run.autocast))
    with training_phase(settings, device):
        run_plan.measure(training, device, lambda i: train_generation(
            run.model, decoded, run_plan.FirstBatches(run.train_loader, 1), run.optimize, monitor, generation=1,
            net=run.train_net, autocast=run.autocast))
    state = {'model': run.model.state_dict(), 'optimizer': run.optimize.optimizer.state_dict(),
             'population': [ind.to_state() for ind in run.population]}
    record_mb = len(json.dumps([run.space.record(ind.alphas) for ind in run.population])) / memory.MB
    result = run_plan.Plan(
        'train_search.py', device, world_size, data_note,
        f"{run.space.title} supernet, {utils.count_parameters_in_MB(run.model):.2f} M parameters, "
        f"{macs / 1e6:.0f} M MACs per image (every operation of every edge)",
        'generation', evolution.generations, baseline, [training, fitness], checkpoint_mb=run_plan.serialized_mb(state),
        disk_per_unit_mb=record_mb,
        notes=[f"--epochs {evolution.generations} generations of --pop_size {evolution.pop_size}"
               + ("; then every architecture drawn is scored once more (random search with weight sharing)"
                  if evolution.strategy == 'random' else '')])
    print(result.table())
    return result.to_dict()


def save_checkpoint(run_dir: str, args: argparse.Namespace, run: SearchRun, elapsed: float,
                    dist: devices.Distributed) -> None:
    """RUN_DIR/checkpoint.pt after a generation, which --resume continues from bit for bit; every rank waits
    for it, so that none runs ahead of the checkpoint it would resume from."""
    fault_point('evolve', run.generations_done)
    all_rng = dist.gather_object(rng_state())  # every rank's global random streams
    if dist.is_main:
        optimizer, scaler = run.optimize.optimizer, run.optimize.scaler
        atomic_save({
            'format': CHECKPOINT_FORMAT,
            'args': vars(args),
            'generation': run.generations_done,
            'population': [ind.to_state() for ind in run.population],
            'model': run.model.state_dict(),
            'optimizer': optimizer.state_dict(),
            'scheduler': run.scheduler.state_dict(),
            'scaler': scaler.state_dict() if scaler is not None else None,
            'ga_generator': run.ga_generator.get_state(),
            'data_generator': run.data_generator.get_state(),
            'rng': all_rng,
            'history': run.history,
            'elapsed': elapsed,
            **({} if run.draws is None else {'draws': run.draws.state()}),
        }, os.path.join(run_dir, 'checkpoint.pt'), fault_tag=run.generations_done)
    dist.barrier()


def restore(run: SearchRun, state: Dict, rank: int) -> None:
    restore_run(state, rank, run.model, run.optimize.optimizer, run.optimize.scaler, scheduler=run.scheduler,
                ga_generator=run.ga_generator, data_generator=run.data_generator)
    run.population = [Individual.from_state(s) for s in state['population']]
    run.generations_done, run.history, run.elapsed_before = state['generation'], state['history'], state['elapsed']
    if run.draws is not None:
        run.draws = random_search.Draws(run.space, state['draws'])


def draw_population(pop_size: int, run: SearchRun) -> List[Individual]:
    """A generation of the random strategy from the search's own generator; under a budget, every draw that does
    not fit is drawn again."""
    budget = run.budget
    accept = None if budget is None else (lambda ind: budget.violation(budget.cost(ind.alphas)) == 0.)
    try:
        return random_population(pop_size, run.shapes, run.ga_generator, accept, MAX_REJECTED)
    except NoFeasibleDraw:
        raise utils.UserError(f"none of {MAX_REJECTED} random architectures in a row fits the budget "
                              f"({budget.describe()}): loosen it, or search it with --strategy evolution") from None


def score_every_draw(settings: SearchSettings, run: SearchRun, run_dir: str, dist: devices.Distributed,
                     monitor: Monitor, logger: logging.Logger) -> None:
    """Random search with weight sharing at the end of a random-strategy run (search/random_search.py); the ranks
    share the fitness calls as in a generation."""
    def score(individuals, seeds):
        run.measure(run.model, individuals, seeds, monitor, settings.evolution.generations + 1, rank=dist.rank,
                    world_size=dist.world_size, net=run.eval_net, autocast=run.autocast)

    result = random_search.score_every_draw(run.draws, score, settings.loader.seed, run.measure.estimator,
                                            run.budget)
    search_fitness_seconds = sum(h.get('fitness_seconds', 0.) for h in run.history)
    random_search.log(logger, run.space, result, search_fitness_seconds)
    if dist.is_main:
        random_search.write(run_dir, run.space, result, settings.evolution.generations, search_fitness_seconds)
    dist.barrier()


def check_agreement(population: Sequence[Individual], dist: devices.Distributed) -> None:
    """Every rank evolves the population itself from the same seed; make sure they all hold the same one."""
    if not dist.enabled:
        return
    digest = torch.tensor([float(sum(a.double().sum().item() * (k + 1) for k, ind in enumerate(population)
                                     for a in ind.alphas))], dtype=torch.float64)
    low, high = -dist.all_reduce(-digest, 'max'), dist.all_reduce(digest, 'max')
    if low.item() != high.item():
        raise utils.UserError("the ranks of this run disagree on the population (they must run the same code "
                              "with the same arguments)")


def rank_population(population: Sequence[Individual], budget: Optional[Budget] = None
                    ) -> Tuple[List[Individual], List[int]]:
    """The population best first (with a budget, each individual's cost measured first: constraint
    domination), and each ranked individual's position in the generation as trained."""
    if budget is not None:
        budget.assess(population)
    index_of = {id(ind): i for i, ind in enumerate(population)}
    ranked = sort_population(population)
    return ranked, [index_of[id(ind)] for ind in ranked]


if __name__ == '__main__':
    sys.exit(stopping.run_main(main, parse_args()))
