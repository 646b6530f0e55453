"""EvNAS search: evolve a population of architectures that share the weights of one supernet.

Each generation (Sinha & Chen, GECCO 2021, Alg. 1):
  1. train the supernet for one epoch on the first half of the training set, step i using the decoded
     architecture of individual i mod pop_size;
  2. measure every individual's fitness (top-1 accuracy of its decoded architecture) on the held-out half;
  3. keep the elites, fill the rest with mutated crossover children of tournament winners.
The best individual of the last generation is the result: RUN_DIR/genotype.json, for train.py.

Examples:
    # the paper's search (CIFAR-10, 50 individuals, 50 generations)
    python train_search.py --cutout
    # a CPU quick-start on generated data (about a minute)
    python train_search.py --dataset synthetic --init_channels 4 --layers 5 --pop_size 4 --tsize 2 --epochs 3 \\
        --valid_batch_size 256 --device cpu --run_dir search-quick
    # continue an interrupted run where its last completed generation ended
    python train_search.py --resume search-quick

RUN_DIR holds log.txt, args.json, generations/gen_NNN.json (every individual's fitness, loss, genotype and
alphas), genotype.json (the best architecture) and checkpoint.pt (what --resume needs).
"""
import argparse
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from typing import Dict, List, Sequence

import torch
import torch.nn as nn

import distributed
import report
import speed
import utils
from architect_evolution import (Individual, count_distinct, decode, evolve, init_population, sort_population)
from checkpoint import (atomic_save, atomic_write_text, load_run_checkpoint, resumed_args,
                        rng_state, save_args, save_dataset_info, set_rng_state)
from cost import describe_cost
from data import DATASETS, Augment, load_dataset, make_loader
from engine import NonFiniteWatch, Tally
from genotypes import genotype_to_dict, save_genotype
from model_search import Network

CHECKPOINT_FORMAT = 'evnas-search/1'
# Flags that do not change what a run computes; only these may differ when a run is resumed.
RESUME_MAY_CHANGE = {'device', 'report_freq', 'num_workers', 'data', 'resume', 'dir', 'run_dir'}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser('train_search', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group('data')
    data.add_argument('--data', type=str, default='../data', help='location of the data corpus (default: ../data)')
    data.add_argument('--dataset', choices=DATASETS, default='cifar10',
                      help='search data (default: cifar10; synthetic = the generated set, for tests and quick starts; '
                           'folder = your images in --data DIR as DIR/train/<class>/*)')
    data.add_argument('--image_size', type=int, default=32,
                      help='folder and synthetic images are resized to this (default: 32)')
    data.add_argument('--synthetic_size', type=int, default=2000,
                      help='training images of the generated set (default: 2000)')
    data.add_argument('--train_portion', type=float, default=0.5,
                      help='share of the training set that trains the supernet; the rest measures fitness '
                           '(default: 0.5)')
    data.add_argument('--cutout', action='store_true', help='use cutout (on training and fitness batches)')
    data.add_argument('--cutout_length', type=int, default=16, help='cutout length (default: 16)')
    data.add_argument('--loader', choices=('tensor', 'torchvision'), default='tensor',
                      help='tensor: batch-wise augmentation on the device (fast); torchvision: the original '
                           'per-image pipeline in worker processes (same distributions) (default: tensor)')
    data.add_argument('--num_workers', type=int, default=2, help='worker processes of --loader torchvision (default: 2)')

    supernet = parser.add_argument_group('supernet training')
    supernet.add_argument('--init_channels', type=int, default=16, help='num of init channels (default: 16)')
    supernet.add_argument('--layers', type=int, default=8, help='total number of layers (default: 8)')
    supernet.add_argument('--batch_size', type=int, default=64, help='batch size (default: 64)')
    supernet.add_argument('--learning_rate', type=float, default=0.025, help='init learning rate (default: 0.025)')
    supernet.add_argument('--learning_rate_min', type=float, default=0.001, help='min learning rate (default: 0.001)')
    supernet.add_argument('--momentum', type=float, default=0.9, help='momentum (default: 0.9)')
    supernet.add_argument('--weight_decay', type=float, default=3e-4, help='weight decay (default: 3e-4)')
    supernet.add_argument('--grad_clip', type=float, default=5, help='gradient clipping (default: 5)')

    evolution = parser.add_argument_group('evolution')
    evolution.add_argument('--epochs', type=int, default=50, help='num of generations (default: 50)')
    evolution.add_argument('--pop_size', type=int, default=50, help='population size (default: 50)')
    evolution.add_argument('--tsize', type=int, default=10, help='tournament size (default: 10)')
    evolution.add_argument('--num_elites', type=int, default=1, help='number of elites (default: 1)')
    evolution.add_argument('--mutate_rate', type=float, default=0.1, help='mutation rate per edge row (default: 0.1)')
    evolution.add_argument('--valid_batch_size', type=int, default=1024,
                           help='fitness batch size; with BatchNorm in train mode it changes the fitness values '
                                '(default: 1024, as EvNAS)')
    evolution.add_argument('--valid_size', type=int, default=None,
                           help='measure fitness on a fixed random subset of this many held-out images, for a '
                                'cheaper search (default: the whole held-out half, as the paper)')

    fast = parser.add_argument_group('speed (see README, "Performance")')
    fast.add_argument('--paper_exact', action='store_true',
                      help='compute the supernet exactly as the original code (with the none op, NCHW); the '
                           'default fast settings give the same results to float tolerance')
    fast.add_argument('--amp', action='store_true',
                      help='bf16 autocast (fp16 with a gradient scaler on GPUs without bf16); changes numerics')
    fast.add_argument('--compile', action='store_true',
                      help='torch.compile the supernet once; every individual reuses the graph')
    fast.add_argument('--sync_bn', action='store_true',
                      help='with torchrun on GPUs, BatchNorm statistics of a training step over the global batch')

    run = parser.add_argument_group('run')
    run.add_argument('--seed', type=int, default=18, help='random seed (default: 18)')
    run.add_argument('--device', type=str, default='auto', help='auto, cpu, cuda or cuda:N (default: auto)')
    run.add_argument('--dir', type=str, default=None,
                     help='where new runs go, as search-YYYYMMDD-HHMMSS (default: the current directory)')
    run.add_argument('--run_dir', type=str, default=None, help='exact directory of a new run (overrides --dir)')
    run.add_argument('--resume', type=str, default=None, metavar='RUN_DIR',
                     help='continue the run in RUN_DIR after its last completed generation')
    run.add_argument('--report_freq', type=int, default=50, help='log every N training steps (default: 50)')
    return parser


def _check_ranges(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    utils.check_args(parser, args,
                     at_least_one=('epochs', 'pop_size', 'tsize', 'batch_size', 'valid_batch_size', 'init_channels',
                                   'layers', 'report_freq', 'image_size'),
                     positive=('learning_rate', 'grad_clip'),
                     non_negative=('learning_rate_min', 'momentum', 'weight_decay', 'cutout_length', 'num_workers'))
    if args.tsize > args.pop_size:
        parser.error(f"--tsize {args.tsize} is larger than --pop_size {args.pop_size}: a tournament draws "
                     f"without replacement")
    if not 0 <= args.num_elites < args.pop_size:
        parser.error(f"--num_elites must be in [0, --pop_size) = [0, {args.pop_size}) (got {args.num_elites})")
    if not 0. <= args.mutate_rate <= 1.:
        parser.error(f"--mutate_rate must be in [0, 1] (got {args.mutate_rate})")
    if not 0. < args.train_portion < 1.:
        parser.error(f"--train_portion must be in (0, 1) (got {args.train_portion})")
    if args.synthetic_size < 2:
        parser.error("--synthetic_size must be at least 2")
    if args.valid_size is not None and args.valid_size < 1:
        parser.error(f"--valid_size must be at least 1 (got {args.valid_size})")


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    distributed.resume_after_restart(parser, args)
    if args.resume is not None:
        args = resumed_args(parser, argv, args, 'train_search', RESUME_MAY_CHANGE)
    _check_ranges(parser, args)
    return args


# ----------------------------------------------------------------------------------------------------------
# One generation

def _check_stop(stop: utils.StopSignals, dist: distributed.Distributed, where: str) -> None:
    """Stop between two steps when a signal asked for it; in a distributed run every rank agrees first."""
    requested = torch.tensor(int(stop()))
    if dist.enabled:
        requested = dist.all_reduce(requested.to(dist.device), 'max').cpu()
    if requested.item():
        raise utils.Stop(f"stopped by signal during generation {where}", stop.exit_code)


def train_generation(model: Network, decoded: Sequence[List[torch.Tensor]], loader, optimizer, criterion,
                     args, generation: int, logger, stop: utils.StopSignals, net=None, autocast=nullcontext,
                     scaler=None, dist: distributed.Distributed = distributed.Distributed()) -> List[Dict[str, float]]:
    """One epoch of supernet training; step i trains the decoded architecture of individual i mod pop_size.
    Returns each individual's training loss and accuracy over its steps (over all ranks). `net` is the
    module to call: the model, or its DistributedDataParallel and/or torch.compile wrapper."""
    net = model if net is None else net
    model.train()
    device = next(model.parameters()).device
    tallies = [Tally(device) for _ in decoded]
    watch = NonFiniteWatch(device, f"generation {generation}")
    reduce = dist.all_reduce if dist.enabled else None
    start, total = time.time(), len(loader)
    for step, (x, y) in enumerate(loader):
        i = step % len(decoded)
        model.set_arch_parameters(decoded[i])
        with autocast():
            logits = net(x)
            loss = criterion(logits.float(), y)
        if utils.fault_point('nan', generation, step) == 'nan':
            loss = loss * float('nan')
        optimizer.zero_grad(set_to_none=True)  # every supernet parameter gets a gradient at every step
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
        tallies[i].update(loss, logits, y)
        watch.update(loss, step)
        utils.fault_point('train', generation, step)
        report = step % args.report_freq == 0 or step == total - 1
        if report:
            watch.check(reduce and (lambda t: reduce(t, 'max')))
            rate = (step + 1) * args.batch_size / max(time.time() - start, 1e-9)
            logger.info(f"gen {generation:3d} | train {step:4d}/{total:4d} | individual {i:3d} "
                        f"| loss {loss.item():.4f} | {rate:6.0f} img/s")
        if report or not dist.enabled:  # a single process can afford to look at every step
            _check_stop(stop, dist, f"{generation}, training step {step}")
    return [t.result(reduce) for t in tallies]


@torch.no_grad()
def evaluate_population(model: Network, population: Sequence[Individual], decoded: Sequence[List[torch.Tensor]],
                        loader, criterion, generation: int, logger, stop: utils.StopSignals, net=None,
                        autocast=nullcontext, seeds: Sequence[int] = None,
                        dist: distributed.Distributed = distributed.Distributed()) -> None:
    """Set every individual's fitness: top-1 accuracy of its decoded architecture on the held-out half.

    Individual i draws its batch order and augmentation from seeds[i], so its fitness does not depend on
    which process measures it: with several ranks, rank r measures individuals r, r + N, ... and the results
    are then shared, so every rank holds every fitness.
    """
    net = model if net is None else net
    # NOTE (faithful to EvNAS): the supernet stays in train mode, so BatchNorm normalises with the statistics
    # of each fitness batch (1024 images by default), not with running averages, and the held-out images
    # carry the training augmentation. The fitness values of the paper depend on both.
    model.train()
    device = next(model.parameters()).device
    timer = utils.Timer()
    mine = list(range(dist.rank, len(population), dist.world_size))
    measured = torch.zeros(len(population), 3, dtype=torch.float64)
    for done, i in enumerate(mine, 1):
        model.set_arch_parameters(decoded[i])
        if seeds is not None:
            loader.generator.manual_seed(int(seeds[i]))
        tally = Tally(device)
        for x, y in loader:
            with autocast():
                logits = net(x).float()
            if utils.fault_point('nanfit', generation, i) == 'nanfit':
                logits = logits * float('nan')
            tally.update(criterion(logits, y), logits, y)
            utils.fault_point('eval', generation, i)
            if not dist.enabled:
                _check_stop(stop, dist, f"{generation}, fitness of individual {i}")
        result = tally.result()
        # A non-finite loss makes the fitness NaN, which ranks below every measured individual.
        fitness = result['top1'] if math.isfinite(result['loss']) else math.nan
        measured[i] = torch.tensor([fitness, result['loss'], result['top5']], dtype=torch.float64)
        logger.info(f"gen {generation:3d} | fitness {i + 1:3d}/{len(population):3d} | top1 {fitness:6.2f} "
                    f"| loss {result['loss']:.4f} | eta {utils.format_duration(timer.remaining(done, len(mine)))}")
    if dist.enabled:
        _check_stop(stop, dist, f"{generation}, fitness evaluation")
        measured = dist.all_reduce(measured.to(dist.device), 'sum').cpu()  # each row is non-zero on one rank
    for individual, (fitness, loss, top5) in zip(population, measured.tolist()):
        individual.fitness, individual.loss, individual.top5 = fitness, loss, top5


def check_agreement(population: Sequence[Individual], dist: distributed.Distributed) -> None:
    """Every rank evolves the population itself from the same seed; make sure they all hold the same one."""
    if not dist.enabled:
        return
    digest = torch.tensor([float(sum(a.double().sum().item() * (k + 1) for k, ind in enumerate(population)
                                     for a in ind.alphas))], dtype=torch.float64, device=dist.device)
    low, high = -dist.all_reduce(-digest, 'max'), dist.all_reduce(digest, 'max')
    if low.item() != high.item():
        raise utils.UserError("the ranks of this run disagree on the population (they must run the same code "
                              "with the same arguments)")


def summarize(population: Sequence[Individual], train_stats: Sequence[Dict], generation: int, lr: float) -> Dict:
    fitness = [ind.fitness for ind in population if not math.isnan(ind.fitness)]
    train_stats = [t for t in train_stats if t['samples']]
    seen = sum(t['samples'] for t in train_stats)
    return {
        'generation': generation,
        'lr': lr,
        'best': max(fitness, default=math.nan),
        'mean': sum(fitness) / len(fitness) if fitness else math.nan,
        'worst': min(fitness, default=math.nan),
        'distinct_genotypes': count_distinct(population),
        'train_loss': sum(t['loss'] * t['samples'] for t in train_stats) / max(seen, 1),
        'train_top1': sum(t['top1'] * t['samples'] for t in train_stats) / max(seen, 1),
    }


def _json_number(value: float):
    """NaN and infinities are not JSON: a missing measurement is written as null."""
    return value if math.isfinite(value) else None


def generation_record(population: Sequence[Individual], train_stats: Sequence[Dict], summary: Dict,
                      order: Sequence[int]) -> Dict:
    """The human-readable record of one generation, best individual first."""
    return {
        **{k: _json_number(v) if isinstance(v, float) else v for k, v in summary.items()},
        'population': [{
            'rank': rank + 1,
            'index': order[rank],  # position in the generation as trained (step i trains index i mod pop_size)
            'fitness': _json_number(ind.fitness),
            'loss': _json_number(ind.loss),
            'top5': _json_number(ind.top5),
            'train_loss': _json_number(train_stats[order[rank]]['loss']),
            'train_top1': _json_number(train_stats[order[rank]]['top1']),
            'genotype': genotype_to_dict(ind.genotype()),
            'alphas': {'normal': ind.alphas[0].tolist(), 'reduce': ind.alphas[1].tolist()},
        } for rank, ind in enumerate(population)],
    }


# ----------------------------------------------------------------------------------------------------------
# Checkpoints

def save_checkpoint(run_dir: str, args, generations_done: int, population, model, optimizer, scheduler, scaler,
                    ga_generator, data_generator, history, elapsed: float, rng: List) -> None:
    atomic_save({
        'format': CHECKPOINT_FORMAT,
        'args': vars(args),
        'generation': generations_done,
        'population': [ind.to_state() for ind in population],
        'model': model.state_dict(),
        'optimizer': optimizer.state_dict(),
        'scheduler': scheduler.state_dict(),
        'scaler': scaler.state_dict() if scaler is not None else None,
        'ga_generator': ga_generator.get_state(),
        'data_generator': data_generator.get_state(),
        'rng': rng,  # every rank's global random streams
        'history': history,
        'elapsed': elapsed,
    }, os.path.join(run_dir, 'checkpoint.pt'), fault_tag=generations_done)


# ----------------------------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> Dict:
    return distributed.run(args, 'search', lambda run_dir, dist, device, stop: search(args, run_dir, stop, dist,
                                                                                       device))


def search(args: argparse.Namespace, run_dir: str, stop: utils.StopSignals, dist: distributed.Distributed,
           device: torch.device) -> Dict:
    logger = utils.setup_logger('train_search', run_dir if dist.is_main else None, enabled=dist.is_main)
    if dist.is_main and not args.resume:
        save_args(run_dir, 'train_search', args)
        os.makedirs(os.path.join(run_dir, 'generations'), exist_ok=True)
    logger.info(f"{'resuming' if args.resume else 'starting'} EvNAS search in {run_dir} on {device}"
                + (f" x {dist.world_size} processes" if dist.enabled else ''))
    logger.info(f"args = {vars(args)}")

    utils.seed_everything(args.seed)
    train_data = load_dataset(args.dataset, args.data, train=True, synthetic_size=args.synthetic_size,
                              image_size=args.image_size)
    if dist.is_main and not args.resume:
        save_dataset_info(run_dir, train_data, args)
    split = int(math.floor(args.train_portion * len(train_data)))
    if split < 1 or split >= len(train_data):
        raise utils.UserError(f"--train_portion {args.train_portion} leaves no images on one side of the split "
                              f"of {len(train_data)} training images")
    model = Network(args.init_channels, train_data.num_classes, args.layers).to(device)
    config = speed.PAPER_EXACT if args.paper_exact else speed.default_config(device)
    speed.apply(model, config)
    # With several processes each step still trains one individual on a global batch of --batch_size
    # images: every rank takes its share of the batch, and DistributedDataParallel averages the gradients.
    train_net = distributed.wrap(model, dist, device, args.sync_bn)
    if args.compile and device.type == 'cpu':
        # Measured on a 2-core CPU (README, "Performance"): compiling a C=8, 5-layer supernet's fitness forward
        # took 638 s for a 5 % faster forward, and its training step did not compile within 30 minutes.
        logger.warning("--compile on a CPU: compiling can take tens of minutes before the first step, "
                       "for a small gain; leave it off for CPU searches")
    # Fitness never goes through DDP: ranks measure different individuals, with no collective in between.
    eval_net = torch.compile(model) if args.compile else model
    train_net = torch.compile(train_net) if args.compile else train_net
    autocast, scaler, precision = utils.mixed_precision(device, args.amp)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(args.epochs), eta_min=args.learning_rate_min)
    ga_generator = utils.make_generator(args.seed)
    data_generator = utils.make_generator(args.seed + 1)
    fitness_generator = utils.make_generator(args.seed + 3)  # reseeded for every individual, from data_generator

    # The first half trains the supernet, the second half measures fitness, both with the training
    # augmentation, each pass in a fresh random order (EvNAS's two SubsetRandomSamplers).
    augment = Augment(cutout_length=args.cutout_length if args.cutout else 0)
    indices = torch.arange(len(train_data))
    valid_indices = indices[split:]
    if args.valid_size is not None and args.valid_size < len(valid_indices):
        # One fixed subset for the whole run, so that fitness values of different generations compare.
        chosen = torch.randperm(len(valid_indices), generator=utils.make_generator(args.seed + 2))[:args.valid_size]
        valid_indices = valid_indices[chosen.sort().values]
    if args.loader == 'tensor':
        train_data = train_data.to(device)  # held once on the device; both loaders index into it
    train_loader = make_loader(args.loader, train_data, args.batch_size, device, indices[:split], shuffle=True,
                               augment=augment, generator=data_generator, num_workers=args.num_workers,
                               rank=dist.rank, world_size=dist.world_size, memory_format=config.memory_format)
    valid_loader = make_loader(args.loader, train_data, args.valid_batch_size, device, valid_indices, shuffle=True,
                               augment=augment, generator=fitness_generator, num_workers=args.num_workers,
                               memory_format=config.memory_format)
    logger.info(f"{args.dataset}: {split} images train the supernet, {len(valid_indices)} measure fitness; "
                f"supernet {utils.count_parameters_in_MB(model):.3f} M parameters; speed: {config.describe()}, "
                f"{precision}{', compiled' if args.compile else ''}")

    population = init_population(args.pop_size, model._steps, ga_generator)
    start_generation, history, elapsed_before = 0, [], 0.
    if args.resume:
        state = load_run_checkpoint(run_dir, CHECKPOINT_FORMAT, args, RESUME_MAY_CHANGE)
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        if scaler is not None and state.get('scaler'):
            scaler.load_state_dict(state['scaler'])
        ga_generator.set_state(state['ga_generator'])
        data_generator.set_state(state['data_generator'])
        set_rng_state(state['rng'][min(dist.rank, len(state['rng']) - 1)])  # one state per rank
        population = [Individual.from_state(s) for s in state['population']]
        start_generation, history, elapsed_before = state['generation'], state['history'], state['elapsed']
        logger.info(f"resumed after generation {start_generation} of {args.epochs}")

    writer = utils.summary_writer(os.path.join(run_dir, 'runs')) if dist.is_main else None
    timer = utils.Timer()
    best_genotype_path = os.path.join(run_dir, 'genotype.json')
    for generation in range(start_generation + 1, args.epochs + 1):
        lr = scheduler.get_last_lr()[0]
        # Decode each individual once per generation; the device copies are reused by every step.
        decoded = [[a.to(device) for a in decode(ind.alphas)] for ind in population]
        seeds = torch.randint(0, 2 ** 62, (len(population),), generator=data_generator).tolist()
        try:
            started = time.time()
            train_stats = train_generation(model, decoded, train_loader, optimizer, criterion, args, generation,
                                           logger, stop, train_net, autocast, scaler, dist)
            scheduler.step()
            trained = time.time()
            evaluate_population(model, population, decoded, valid_loader, criterion, generation, logger, stop,
                                eval_net, autocast, seeds, dist)
            evaluated = time.time()
        except utils.Stop as e:
            raise utils.Stop(utils.stopped_note(str(e), generation - 1, 'generation', run_dir, 'train_search.py',
                                                logger), e.exit_code) from None

        index_of = {id(ind): i for i, ind in enumerate(population)}
        population = sort_population(population)
        ranked_order = [index_of[id(ind)] for ind in population]
        summary = summarize(population, train_stats, generation, lr)
        summary.update(train_seconds=trained - started, fitness_seconds=evaluated - trained)
        history.append(summary)
        elapsed = elapsed_before + timer.elapsed()
        remaining = timer.remaining(generation - start_generation, args.epochs - start_generation)
        logger.info(f"gen {generation:3d}/{args.epochs} | best {summary['best']:6.2f} | mean {summary['mean']:6.2f} "
                    f"| worst {summary['worst']:6.2f} | distinct {summary['distinct_genotypes']:3d}/{len(population)} "
                    f"| train loss {summary['train_loss']:.4f} | elapsed {utils.format_duration(elapsed)} "
                    f"| eta {utils.format_duration(remaining)}")
        if dist.is_main:
            atomic_write_text(os.path.join(run_dir, 'generations', f'gen_{generation:03d}.json'),
                              json.dumps(generation_record(population, train_stats, summary, ranked_order),
                                         allow_nan=False) + '\n')
        if writer is not None:
            for key in ('best', 'mean', 'worst'):
                writer.add_scalar(f'fitness/{key}', summary[key], generation)
            writer.add_scalar('population/distinct_genotypes', summary['distinct_genotypes'], generation)
            writer.add_scalar('train/loss', summary['train_loss'], generation)
            writer.add_scalar('train/top1', summary['train_top1'], generation)
            writer.add_scalar('train/lr', lr, generation)
            writer.flush()

        if generation == args.epochs:
            if dist.is_main:
                save_genotype(population[0].genotype(), best_genotype_path)
            logger.info(f"best architecture (fitness {population[0].fitness:.2f}): {population[0].genotype()}")
        else:
            population = evolve(population, args.num_elites, args.tsize, args.mutate_rate, ga_generator)
            check_agreement(population, dist)
        utils.fault_point('evolve', generation)
        all_rng = dist.gather_object(rng_state())
        if dist.is_main:
            save_checkpoint(run_dir, args, generation, population, model, optimizer, scheduler, scaler, ga_generator,
                            data_generator, history, elapsed, all_rng)
        dist.barrier()  # no rank runs ahead of the checkpoint it would resume from
    if writer is not None:
        writer.close()
    if start_generation >= args.epochs:
        logger.info(f"{run_dir} already completed its {args.epochs} generations; nothing to do")
    elif dist.is_main:
        summary = report.write_report(run_dir)
        for label, key in (('CIFAR (C=36, 20 layers)', 'cifar'), ('ImageNet (C=48, 14 layers)', 'imagenet')):
            logger.info(f"cost of the best architecture, {describe_cost(summary['costs'][key], label)}")
        logger.info(f"saved {best_genotype_path}, its diagram and {os.path.join(run_dir, 'report.md')}; train it "
                    f"with: python train.py --dir {run_dir} --auxiliary --cutout")
    utils.close_logger(logger)
    return {'run_dir': run_dir, 'history': history, 'population': population,
            'genotype_path': best_genotype_path}


if __name__ == '__main__':
    sys.exit(utils.run_main(main, parse_args()))
