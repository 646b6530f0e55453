"""How far a search's ranking can be trusted: a stand-alone reference for a sample of the architectures one
search run saw, and how well the supernet's fitness agrees with it.

EvNAS keeps the architecture the shared-weight supernet ranks first. That choice is only as good as the
agreement between the supernet's ranking and the ranking the architectures would get trained alone. This
script measures it for one run:
  1. sample K distinct architectures of the run (its pick, plus a sample stratified by generation and by
     fitness rank within the generation, drawn with a recorded seed);
  2. supernet side: score them again on the run's final supernet with the run's own fitness function (same
     held-out images, BatchNorm mode, batch size and augmentation), --fitness_seeds times with different draws;
  3. reference side: train each of them alone with train.py's recipe (--epochs, --init_channels, --layers,
     --batch_size) for --seeds seeds, on the run's training data, and take train.py's last-epoch top-1 on the
     test split, which the search never scored: a stand-alone reference at E epochs, not the paper's 600;
     NAS-Bench-201 runs with --api_path take the benchmark's 200-epoch accuracy instead (no training);
  4. the agreement (stats/rank_stats.py): Kendall tau-b and Spearman rho with bootstrap intervals and a permutation
     p-value, the tau a perfect supernet would be expected to reach, tau inside the top stratum, top-k overlap,
     the pick's regret;
  5. the published cells beside the pick (--baselines: EvNAS-A/B/C and DARTS-V2 trained with the same recipe
     and seeds); in NAS-Bench-201 the pick's gap to the space's best and its percentile among all 15,625.
A run of train_search.py --strategy random is sampled uniformly instead (its pick and its weight-sharing pick
always in): the mean reference of that sample is what a uniformly random architecture is expected to reach.
`--compare` then sets the picks of searches against those of random runs with the same seeds (stats/comparison.py).

Examples:
    # 20 architectures, 2 seeds of 10 epochs each, on the search's data
    python trust.py --dir search-EXP --archs 20 --seeds 2 --epochs 10 --init_channels 8 --layers 5
    # the supernet side only, with the opt-in fitness estimators beside the original's
    python trust.py --dir search-EXP --estimators original,shared,recalibrate,no_augment --no_reference
    # a NAS-Bench-201 run: the benchmark is the reference
    python trust.py --dir search-nb201 --archs 50 --api_path NAS-Bench-201-v1_1-096897.pth
    # did evolution beat random with the same supernet? searches and random runs of seeds 1-3, measured first
    python trust.py --compare search-s1 search-s2 search-s3 --against random-s1 random-s2 random-s3

Writes RUN_DIR/trust/trust.json (every architecture's fitness per estimator and draw, reference per seed,
parameters, training time; the sample's seed), trust.md (the figures, with warnings where they cannot carry a
conclusion) and trust.png (with matplotlib). Each stand-alone training is written when done: killed and run
again, the same command continues where it stopped and ends with the same table.
"""
import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

import fitness
import report
import speed
import train
import train_search
import utils
from cli import arguments, search_arguments
from engine import Monitor
from genotypes import ARCHITECTURES, Genotype, GenotypeError, genotype_from_dict, save_genotype
from runtime import devices, logs, stopping
from runtime.checkpoint import atomic_write_text, load_run_checkpoint
from search import random_search
from search_space import SearchSpace, get_space
from stats import comparison, rank_stats

TOP_STRATA = 3       # fitness-rank strata within a generation: the best third, the middle one, the worst one
MIN_ARCHS = 10       # below this a tau must be large to differ from zero (p < 0.05 needs tau >= 0.51 at K = 10)
LOW_CEILING = 0.5    # a perfect supernet expected below this: the reference cannot tell good rankings from poor ones
BASELINES = ('EvNASA', 'EvNASB', 'EvNASC', 'DARTS_V2')  # the published cells trained beside the pick (DARTS space)


@dataclass
class Candidate:
    """A distinct architecture of the run, where it was first seen and how the search scored it there."""
    key: str
    describe: str
    alphas: List[torch.Tensor]
    generation: int
    rank: int                     # 1 = best of its generation
    stratum: int                  # 0 = the best third of its generation ... TOP_STRATA - 1 = the worst third
    fitness: float                # as recorded
    fitness_seed: Optional[int]   # None in runs recorded before the seeds were
    pick: bool = False            # the run's result: its last generation's best
    weight_sharing_pick: bool = False  # a random run's pick by random search with weight sharing
    scores: Dict[str, List[float]] = field(default_factory=dict)  # estimator -> fitness per draw


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = arguments.ArgumentParser('trust', description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--dir', type=str, metavar='SEARCH_RUN', help='a train_search.py run')
    what.add_argument('--pool', type=str, nargs='+', metavar='SEARCH_RUN',
                      help='runs trust.py measured already (with a reference): each estimator\'s tau in each, and its '
                           'difference from the first estimator\'s pooled over the runs (paired bootstrap)')
    what.add_argument('--compare', type=str, nargs='+', metavar='SEARCH_RUN',
                      help='searches trust.py measured already: each pick against the comparators of the --against '
                           'runs of the same seeds and the published cells, paired over the seeds')
    parser.add_argument('--against', type=str, nargs='+', metavar='RANDOM_RUN', default=[],
                        help='with --compare: train_search.py --strategy random runs with the seeds of the searches, '
                             'measured by trust.py with the same recipe')
    parser.add_argument('--out', type=str, default=None, metavar='DIR',
                        help='with --compare: also write DIR/compare.md and compare.json')
    sample = parser.add_argument_group('which architectures')
    sample.add_argument('--archs', type=str, default='20', metavar='K|FILE',
                        help='K distinct architectures: the run\'s pick and K-1 drawn stratified by generation and '
                             'fitness rank (a random-strategy run: its two picks and the rest drawn uniformly); 1: the '
                             'pick alone (no agreement figures); or a JSON file of genotypes (DARTS) or arch strings '
                             '(NAS-Bench-201) the run saw (default: 20)')
    sample.add_argument('--sample_seed', type=int, default=0, help='seed of the sample and of the fitness draws '
                                                                  '(default: 0)')
    scoring = parser.add_argument_group('supernet side')
    scoring.add_argument('--fitness_seeds', type=int, default=2,
                         help='score each architecture this many times with different batch orders and augmentation '
                              'draws: the reliability of the supernet side (default: 2)')
    scoring.add_argument('--estimators', type=str, default='original',
                         help=f"comma-separated fitness estimators to score with ({', '.join(fitness.ESTIMATORS)}); "
                              f"the first is the one the agreement figures lead with (default: original)")
    reference = parser.add_argument_group('reference side (train.py\'s recipe)')
    reference.add_argument('--seeds', type=int, default=2,
                           help='stand-alone trainings per architecture, with train.py --seed SEED, SEED+1, ... '
                                '(--seed, default 0) (default: 2)')
    reference.add_argument('--epochs', type=int, default=10, help='epochs of each training (default: 10)')
    reference.add_argument('--init_channels', type=int, default=16, help='width of each network (default: 16)')
    reference.add_argument('--layers', type=int, default=8, help='layers of each network (default: 8)')
    reference.add_argument('--batch_size', type=int, default=96, help='batch size (default: 96)')
    reference.add_argument('--auxiliary', action='store_true', help='train with the auxiliary tower')
    reference.add_argument('--cutout', action='store_true', help='train with cutout')
    reference.add_argument('--baselines', type=str, default=None, metavar='NAMES|none',
                           help='DARTS space: published cells (genotypes.py names) trained with the same recipe and '
                                'seeds, beside the pick (default: ' + ','.join(BASELINES) + ')')
    reference.add_argument('--reference_cache', type=str, default=None, metavar='DIR',
                           help='where the stand-alone trainings are kept, by architecture, recipe, seed and data '
                                '(default: RUN/trust/reference); runs that share one train each network once')
    reference.add_argument('--no_reference', action='store_true',
                           help='the supernet side only (no training): the estimators\' agreement with each other')
    reference.add_argument('--api_path', type=str, default=None, metavar='FILE',
                           help='NAS-Bench-201 runs: the benchmark file, whose 200-epoch accuracies are the reference')
    run = parser.add_argument_group('run')
    arguments.add_seed_and_device(run, 0)
    run.add_argument('--iterations', type=int, default=2000, help='bootstrap and permutation draws (default: 2000)')
    args = parser.parse_args(argv)
    arguments.check_args(parser, args, at_least_one=('fitness_seeds', 'seeds', 'epochs', 'init_channels', 'layers',
                                                 'batch_size', 'iterations'))
    args.estimators = [name.strip() for name in args.estimators.split(',') if name.strip()]
    unknown = [name for name in args.estimators if name not in fitness.ESTIMATORS]
    if unknown or not args.estimators:
        parser.error(f"unknown estimator {', '.join(unknown) or '(none given)'} "
                     f"(known: {', '.join(fitness.ESTIMATORS)})")
    args.baselines_given = args.baselines is not None
    names = ','.join(BASELINES) if args.baselines is None else args.baselines
    args.baselines = [] if names.strip() == 'none' else [name.strip() for name in names.split(',') if name.strip()]
    unknown = [name for name in args.baselines if name not in ARCHITECTURES]
    if unknown:
        parser.error(f"--baselines: unknown architecture {unknown[0]} (known: {', '.join(ARCHITECTURES)}, or none)")
    if (args.against or args.out) and not args.compare:
        parser.error(f"{'--against' if args.against else '--out'} goes with --compare")
    if args.compare and not args.against:
        parser.error("--compare needs --against RANDOM_RUN ...: the random-strategy runs of the same seeds")
    return args


def main(args: argparse.Namespace) -> Dict:
    if args.pool:
        return pool(args.pool, args.iterations, args.sample_seed)
    if args.compare:
        return comparison.compare(args.compare, args.against, args.out)
    run_args = search_run_args(args.dir)
    space = get_space(run_args.space)
    records = report.read_records(args.dir)
    candidates = distinct_architectures(records, space, random_search.read(args.dir))
    sample = choose(candidates, args.archs, args.sample_seed, space, uniform=run_args.strategy == 'random')
    if space.name != 'darts' and args.baselines and args.baselines_given:
        raise utils.UserError("--baselines are cells of the DARTS space; in NAS-Bench-201 the benchmark places the "
                              "pick among all its architectures (--api_path)")
    baselines = {name: ARCHITECTURES[name] for name in args.baselines} if space.name == 'darts' else {}
    out_dir = os.path.join(args.dir, 'trust')
    os.makedirs(out_dir, exist_ok=True)
    logger = logs.setup_logger('trust', out_dir, enabled=process_share()[0] == 0)
    logger.info(f"{len(sample)} of the {len(candidates)} distinct architectures of {args.dir} "
                + ("(its two picks and the rest drawn uniformly" if run_args.strategy == 'random' else "(stratified")
                + f", sample seed {args.sample_seed})")
    if run_args.strategy == 'random' and all(c.pick or c.weight_sharing_pick for c in sample):
        logger.warning("the sample holds only the random run's picks: no uniform sample estimates what a random "
                       "architecture reaches (give --archs 3 or more)")
    if 1 < len(sample) < MIN_ARCHS:
        logger.warning(f"with {len(sample)} architectures {critical_tau_text(len(sample))}; use --archs 20 or more")

    device = devices.resolve_device(args.device)
    rank, world_size = process_share()
    check = score_on_supernet(run_args, sample, records[-1]['population'][0], args, device, logger) if rank == 0 else {}
    references = reference_side(run_args, sample, baselines, args, out_dir, device, logger)
    if rank != 0:  # under torchrun the others only train their share; rank 0 writes the figures
        logs.close_logger(logger)
        return {}
    result = summarize(args, run_args, sample, references, check)
    atomic_write_text(os.path.join(out_dir, 'trust.json'), json.dumps(result, indent=1, allow_nan=False) + '\n')
    plot(out_dir, result)  # first: trust.md shows it where it exists
    write_markdown(out_dir, result)
    report.write_report(args.dir)
    logger.info(f"wrote {os.path.join(out_dir, 'trust.md')}")
    logs.close_logger(logger)
    return result


# ----------------------------------------------------------------------------------------------------------
# The run and its architectures

def search_run_args(run_dir: str) -> argparse.Namespace:
    """The run's resolved flags, as --resume reads them (flags newer than the run at their defaults)."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            return train_search.parse_args(['--resume', run_dir])
    except SystemExit:
        why = said.getvalue().strip().splitlines()[-1:] or ['']
        why = why[0].removeprefix('error: ').removeprefix(f"--resume {run_dir}").lstrip(': ').split(' (see: ')[0]
        raise utils.UserError((f"{run_dir} {why}" if why.startswith('is ') else f"{run_dir}: {why}")
                              + " (trust.py needs a train_search.py run with a completed generation)") from None


def distinct_architectures(records: Sequence[Dict], space: SearchSpace,
                           weight_sharing: Optional[Dict] = None) -> List[Candidate]:
    """Every distinct architecture of the run, where it was first seen; the run's pick (the best of the last
    generation) marked, and a random-strategy run's weight-sharing pick (its weight_sharing.json)."""
    seen: Dict[str, Candidate] = {}
    for record in records:
        size = len(record['population'])
        for entry in record['population']:
            alphas = [torch.tensor(entry['alphas'][cell], dtype=torch.float32) for cell in space.cells]
            key = space.key(alphas)
            if key not in seen:
                fitness_value = math.nan if entry['fitness'] is None else float(entry['fitness'])
                seen[key] = Candidate(key, space.describe(alphas), alphas, record['generation'], entry['rank'],
                                      min((entry['rank'] - 1) * TOP_STRATA // size, TOP_STRATA - 1), fitness_value,
                                      entry.get('fitness_seed'))
    pick = records[-1]['population'][0]
    seen[space.key([torch.tensor(pick['alphas'][cell]) for cell in space.cells])].pick = True
    if weight_sharing is not None:
        chosen = weight_sharing['pick']
        key = space.key([torch.tensor(chosen['alphas'][cell]) for cell in space.cells])
        if key not in seen:
            raise utils.UserError("the run's weight_sharing.json names an architecture its generation records do not "
                                  "hold: the files belong to different runs")
        seen[key].weight_sharing_pick = True
    return list(seen.values())


def choose(candidates: List[Candidate], archs: str, seed: int, space: SearchSpace,
           uniform: bool = False) -> List[Candidate]:
    """The pick (and a random run's weight-sharing pick) and K-1 others. Drawn stratified: the (generation,
    fitness-rank stratum) cells in a random order, one architecture from each in turn, so that every generation
    and every part of the ranking is represented as far as K allows. `uniform` (a random-strategy run, whose every
    draw is a uniformly random architecture): drawn uniformly, so that their mean reference estimates what a
    random architecture reaches. Or the architectures of a file."""
    if not archs.isdigit():
        return _from_file(candidates, archs, space)
    k = int(archs)
    chosen = [c for c in candidates if c.pick] + [c for c in candidates if c.weight_sharing_pick and not c.pick]
    if k < 1:
        raise utils.UserError(f"--archs {k}: at least the pick (1); a rank agreement needs 2 or more (20 to mean much)")
    if k > len(candidates):
        raise utils.UserError(f"--archs {k}: the run saw only {len(candidates)} distinct architectures")
    generator = utils.make_generator(seed)
    others = [c for c in candidates if not (c.pick or c.weight_sharing_pick)]
    if uniform:
        return chosen + [others[i] for i in torch.randperm(len(others), generator=generator).tolist()
                         [:max(0, k - len(chosen))]]
    cells: Dict[tuple, List[Candidate]] = {}
    for candidate in others:
        cells.setdefault((candidate.generation, candidate.stratum), []).append(candidate)
    queues = [[members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
              for _, members in sorted(cells.items())]
    order = torch.randperm(len(queues), generator=generator).tolist()
    while len(chosen) < k:
        for i in order:
            if queues[i] and len(chosen) < k:
                chosen.append(queues[i].pop())
    return chosen


def _from_file(candidates: List[Candidate], path: str, space) -> List[Candidate]:
    """The architectures of a JSON list (genotype dicts in the DARTS space, arch strings in NAS-Bench-201), each
    one the run saw; the run's pick is always among them."""
    try:
        with open(path) as f:
            wanted = json.load(f)
        if not isinstance(wanted, list):
            raise ValueError('expected a JSON list')
        keys = [space.genotype_key(genotype_from_dict(item) if isinstance(item, dict) else item) for item in wanted]
    except (OSError, ValueError, TypeError, KeyError, GenotypeError) as e:
        raise utils.UserError(f"--archs {path}: {utils.reason(e)} (a JSON list of genotypes or arch strings)") from None
    by_key = {c.key: c for c in candidates}
    missing = [item for item, key in zip(wanted, keys) if key not in by_key]
    if missing:
        raise utils.UserError(f"--archs {path}: {missing[0]} is not an architecture this run saw")
    picks = [c for c in candidates if c.pick] + [c for c in candidates if c.weight_sharing_pick and not c.pick]
    return picks + [by_key[key] for key in dict.fromkeys(keys)
                    if not (by_key[key].pick or by_key[key].weight_sharing_pick)]


# ----------------------------------------------------------------------------------------------------------
# Supernet side

class SupernetSide:
    """The run's final supernet with the run's fitness function (its held-out images, BatchNorm mode, batch
    size and augmentation), and any estimator of fitness.py on the same weights."""

    def __init__(self, run_dir: str, run_args, device):
        self.settings, self.device = search_arguments.search_settings(run_args), device
        self.space = get_space(run_args.space)
        self.data = self.space.search_data(self.settings.data, self.settings.augment)
        self.config = speed.config_for(device, run_args.paper_exact)
        speed.configure_process(self.config)
        self.supernet = self.space.build_supernet(self.settings.supernet, self.data.train.num_classes,
                                                  speed.layers(self.config))
        self.supernet.to(device, memory_format=self.config.memory_format)
        state = load_run_checkpoint(run_dir, train_search.CHECKPOINT_FORMAT, vars(run_args),
                                    search_arguments.RESUME_MAY_CHANGE)
        if state['generation'] != len(report.read_records(run_dir)):
            raise utils.UserError(f"{run_dir}: its checkpoint and its records disagree on the generations done")
        self.weights, self.generation = state['model'], state['generation']

    def score(self, estimator: fitness.Estimator, alphas: Sequence[Sequence[torch.Tensor]],
              seeds: Sequence[int]) -> List[float]:
        """The fitness of each architecture (its raw alphas), measured with its seed."""
        self.supernet.load_state_dict(self.weights)
        measure = fitness.FitnessMeasure(estimator, self.settings.loader, self.data, self.device, self.config,
                                         self.space, self.settings.augment)
        individuals = [fitness.scored(a) for a in alphas]
        measure(self.supernet, individuals, seeds, Monitor(), self.generation)
        return [ind.fitness for ind in individuals]


def score_on_supernet(run_args, sample: List[Candidate], best: Dict, args, device, logger) -> Dict:
    """Each architecture's fitness on the run's final supernet, per estimator and draw; first, the last
    generation's best (`best`, its record) again with its recorded seed, which must give its recorded fitness:
    the supernet side is the run's own fitness function."""
    side = SupernetSide(args.dir, run_args, device)
    recorded = math.nan if best['fitness'] is None else best['fitness']
    check = {'recorded': recorded, 'seed': best.get('fitness_seed')}
    if check['seed'] is None:
        check['status'] = 'not possible: the run was recorded before fitness seeds were (it still works)'
    else:
        alphas = [torch.tensor(best['alphas'][cell], dtype=torch.float32) for cell in side.space.cells]
        check['measured'] = side.score(side.settings.fitness, [alphas], [check['seed']])[0]
        check['status'] = 'equal' if check['measured'] == recorded else 'different'
        logger.info(f"the pick again with its recorded seed: fitness {check['measured']:.4f} "
                    f"(recorded {recorded:.4f}): {check['status']}")
        if check['status'] != 'equal':
            logger.warning("the supernet side differs from the run's own fitness (another device, torch version or "
                           "speed setting?); its figures below are still a fitness, but not the run's exactly")
    for name in args.estimators:
        estimator = fitness.ESTIMATORS[name]
        for draw in range(args.fitness_seeds):
            seeds = fitness.draw_seeds(estimator, draw_generator(args.sample_seed, draw), len(sample))
            scores = side.score(estimator, [c.alphas for c in sample], seeds)
            for candidate, score in zip(sample, scores):
                candidate.scores.setdefault(name, []).append(score)
            logger.info(f"supernet side | {name} | draw {draw + 1}/{args.fitness_seeds} | "
                        f"mean fitness {sum(scores) / len(scores):6.2f}")
    return check


def draw_generator(sample_seed: int, draw: int) -> torch.Generator:
    """The generator of the fitness seeds of one draw: the same for every estimator, so that draw d of two
    estimators differs only in what the estimators do."""
    return utils.make_generator(1009 * sample_seed + draw + 1)


# ----------------------------------------------------------------------------------------------------------
# Reference side

def reference_side(run_args, sample: List[Candidate], baselines: Dict[str, Genotype], args, out_dir: str, device,
                   logger) -> Optional[Dict]:
    """{'kind', 'metric', 'per_seed': [K][S] accuracies, 'params', 'seconds', 'test_images', 'baselines'}, or None
    with --no_reference."""
    if args.no_reference:
        return None
    if run_args.space == 'nb201':
        return benchmark_reference(run_args, sample, args)
    return trained_reference(run_args, sample, baselines, args, out_dir, device, logger)


def trained_reference(run_args, sample: List[Candidate], baselines: Dict[str, Genotype], args, out_dir: str, device,
                      logger) -> Dict:
    """Every (architecture, seed) trained alone, the sample's and the published cells' (`baselines`) with the
    same recipe and seeds; under torchrun, rank r trains jobs r, r + N, ... each in its own single process, and
    rank 0 waits for all of them (every job's result is the same wherever it ran, with the same threads per
    process)."""
    space = get_space(run_args.space)
    seeds = [args.seed + i for i in range(args.seeds)]  # train.py --seed of each stand-alone training
    networks = [space.genotype(c.alphas) for c in sample] + list(baselines.values())
    labels = [f"architecture {k + 1}" for k in range(len(sample))] + list(baselines)
    jobs = [(n, s) for n in range(len(networks)) for s in seeds]
    rank, world_size = process_share()
    cache = args.reference_cache or os.path.join(out_dir, 'reference')
    flags = recipe_flags(args) + report.search_data_flags(report.RecordedSearch.from_args(vars(run_args)))
    keys = {(n, s): training_key(space, networks[n], flags, s, device) for n, s in jobs}
    # a published cell may also be in the sample: each key is trained once, by one process
    first_job: Dict[str, tuple] = {}
    for job in jobs:
        first_job.setdefault(keys[job], job)
    unique = list(first_job.values())
    logger.info(f"reference side: ({len(sample)} architectures + {len(baselines)} published cells) x {len(seeds)} "
                f"seeds x {args.epochs} epochs = {len(jobs)} stand-alone trainings (C={args.init_channels}, "
                f"{args.layers} layers, batch {args.batch_size}), kept in {cache}"
                + (f", over {world_size} processes" if world_size > 1 else ''))
    timer = logs.Timer()
    mine = unique[rank::world_size]
    for done, (n, s) in enumerate(mine, 1):
        result = _train_one(networks[n], flags, s, keys[n, s], cache, device)
        logger.info(f"reference {done:3d}/{len(mine)} | {labels[n]} seed {s} | test top1 "
                    f"{result['top1']:6.2f} | {result['seconds']:.0f} s | eta "
                    f"{logs.format_duration(timer.remaining(done, len(mine)))}")
    results = {job: _wait_for(_result_path(cache, keys[job])) for job in jobs}

    def table(n: int) -> Dict:
        return {'per_seed': [results[n, s]['top1'] for s in seeds], 'params': results[n, seeds[0]]['params'],
                'seconds': [results[n, s]['seconds'] for s in seeds]}

    rows = [table(n) for n in range(len(networks))]
    return {'kind': 'stand-alone', 'metric': f"train.py's last-epoch test top-1 after {args.epochs} epochs",
            'seeds': seeds, 'per_seed': [row['per_seed'] for row in rows[:len(sample)]],
            'params': [row['params'] for row in rows[:len(sample)]],
            'seconds': [row['seconds'] for row in rows[:len(sample)]],
            'baselines': dict(zip(baselines, rows[len(sample):])),
            'test_images': results[jobs[0]]['test_images']}


def recipe_flags(args) -> List[str]:
    """train.py's flags of the stand-alone recipe (the data flags come from the search run)."""
    return (['--epochs', str(args.epochs), '--init_channels', str(args.init_channels), '--layers', str(args.layers),
             '--batch_size', str(args.batch_size)]
            + (['--auxiliary'] if args.auxiliary else []) + (['--cutout'] if args.cutout else []))


def training_key(space: SearchSpace, genotype: Genotype, flags: Sequence[str], seed: int, device) -> str:
    """The name a stand-alone training is kept under: a digest of what decides its result (the architecture as a
    cell, whatever order its edges are listed in; train.py's flags; the seed; the kind of device)."""
    what = json.dumps({'architecture': space.genotype_key(genotype), 'flags': list(flags), 'seed': seed,
                       'device': torch.device(device).type})
    return hashlib.sha256(what.encode()).hexdigest()[:16]


def process_share() -> tuple:
    """(rank, world size) under torchrun, (0, 1) otherwise."""
    return int(os.environ.get('RANK', '0')), int(os.environ.get('WORLD_SIZE', '1'))


@contextlib.contextmanager
def one_process():
    """train.py run inside a torchrun rank as a single process of its own: the variables through which it would
    join the group hidden while it runs."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k in TORCHRUN_VARIABLES or k.startswith('TORCHELASTIC')}
    try:
        yield
    finally:
        os.environ.update(saved)


TORCHRUN_VARIABLES = {'RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'GROUP_RANK', 'GROUP_WORLD_SIZE',
                      'ROLE_RANK', 'ROLE_WORLD_SIZE', 'ROLE_NAME', 'MASTER_ADDR', 'MASTER_PORT'}


def _result_path(cache: str, key: str) -> str:
    return os.path.join(cache, f"{key}.json")


def _wait_for(path: str, poll_s: float = 2.) -> Dict:
    """A job's result, once the process that trains it has written it (torchrun ends every rank if one fails)."""
    while not os.path.isfile(path):
        time.sleep(poll_s)
    with open(path) as f:
        return json.load(f)


def _train_one(genotype: Genotype, flags: Sequence[str], seed: int, key: str, cache: str, device) -> Dict:
    """One stand-alone training with train.py, resumed where a killed one stopped; its result is kept in the
    cache once done, and read from there afterwards."""
    result_path = _result_path(cache, key)
    if os.path.isfile(result_path):
        with open(result_path) as f:
            return json.load(f)
    run_dir = os.path.join(cache, key)
    os.makedirs(cache, exist_ok=True)
    if os.path.isfile(os.path.join(run_dir, 'checkpoint.pt')):
        argv = ['--resume', run_dir, '--device', str(device)]
    else:
        genotype_path = os.path.join(cache, f"{key}.genotype.json")
        save_genotype(genotype, genotype_path)
        argv = (['--genotype', genotype_path] + list(flags)
                + ['--seed', str(seed), '--device', str(device), '--report_freq', str(10 ** 6), '--run_dir', run_dir])
    started = time.time()
    with open(os.devnull, 'w') as sink, contextlib.redirect_stdout(sink), one_process():  # its log.txt keeps it all
        summary = train.main(train.parse_args(argv))['summary']
    result = {'genotype': str(genotype), 'seed': seed, 'top1': summary['last_test_top1'],
              'params': summary['params_mb'], 'seconds': time.time() - started, 'test_images': summary['test_images']}
    atomic_write_text(result_path, json.dumps(result, indent=1) + '\n')
    return result


def benchmark_reference(run_args, sample: List[Candidate], args) -> Dict:
    from inputs.nb201 import Benchmark
    if args.api_path is None:
        raise utils.UserError("a NAS-Bench-201 run's reference is the benchmark: give --api_path FILE, or "
                              "--no_reference for the supernet side alone")
    benchmark = Benchmark.open(args.api_path, run_args.dataset)
    per_seed, metric = [], None
    for candidate in sample:
        found = benchmark.per_seed(candidate.describe)
        if found is None:
            raise utils.UserError(f"{candidate.describe} is not in the NAS-Bench-201 file {args.api_path}")
        per_seed.append(found['accuracies'])
        metric = found['metric']
    width = min(len(row) for row in per_seed)
    every = benchmark.every_test_accuracy()
    placement = {}
    for role, candidate in (('pick', next(c for c in sample if c.pick)),
                            ('weight_sharing_pick', next((c for c in sample if c.weight_sharing_pick), None))):
        if candidate is not None:
            found = benchmark.lookup(candidate.describe)
            placement[role] = {'test': found['test'], 'best_test': max(every), 'gap': max(every) - found['test'],
                               'percentile': 100.0 * sum(v < found['test'] for v in every) / len(every),
                               'architectures': len(every)}
    return {'kind': 'NAS-Bench-201', 'metric': metric, 'seeds': list(range(width)),
            'per_seed': [row[:width] for row in per_seed], 'params': [math.nan] * len(sample),
            'seconds': [[0.] * width for _ in sample], 'test_images': None, 'baselines': {},
            'placement': placement}


# ----------------------------------------------------------------------------------------------------------
# The figures

def summarize(args, run_args, sample: List[Candidate], references: Optional[Dict], check: Dict) -> Dict:
    estimators = args.estimators
    space = get_space(run_args.space)
    architectures = [{
        'describe': c.describe, 'key': c.key, 'pick': c.pick, 'weight_sharing_pick': c.weight_sharing_pick,
        **{k: v for k, v in space.record(c.alphas).items() if k != 'alphas'},
        'generation': c.generation, 'rank': c.rank,
        'stratum': c.stratum, 'recorded_fitness': utils.json_number(c.fitness), 'fitness_seed': c.fitness_seed,
        'fitness': {name: [utils.json_number(v) for v in c.scores[name]] for name in estimators},
        **({} if references is None else {
            'reference': [utils.json_number(v) for v in references['per_seed'][k]],
            'params_mb': utils.json_number(references['params'][k]),
            'train_seconds': [utils.json_number(v) for v in references['seconds'][k]]}),
    } for k, c in enumerate(sample)]
    result = {'run': os.path.abspath(args.dir), 'space': run_args.space, 'strategy': run_args.strategy,
              'search_seed': run_args.seed, 'sample_seed': args.sample_seed,
              'archs': len(sample), 'fitness_seeds': args.fitness_seeds, 'estimators': estimators,
              'exact_fitness_check': {k: utils.json_number(v) if isinstance(v, float) else v for k, v in check.items()},
              'reference': None if references is None else {k: references[k] for k in ('kind', 'metric', 'seeds')},
              'training': None if references is None or references['kind'] != 'stand-alone' else {
                  'epochs': args.epochs, 'init_channels': args.init_channels, 'layers': args.layers,
                  'batch_size': args.batch_size, 'auxiliary': args.auxiliary, 'cutout': args.cutout,
                  'data': report.search_data_flags(report.RecordedSearch.from_args(vars(run_args))),
                  'device': devices.resolve_device(args.device).type},
              'architectures': architectures, 'agreement': None}
    if references is not None:
        reference = torch.tensor(references['per_seed'], dtype=torch.float64).numpy()
        if len(sample) > 1:
            result['agreement'] = {name: agreement(sample, name, reference, args, references['test_images'])
                                   for name in estimators}
        result['test_images'] = references['test_images']
        pick = reference[next(k for k, c in enumerate(sample) if c.pick)]
        result['baselines'] = {name: utils.json_numbers({
            'reference': row['per_seed'], 'params_mb': row['params'], 'train_seconds': row['seconds'],
            # the pick minus the published cell, paired by training seed (both trained with the same seed)
            'pick_minus_this': rank_stats.paired_differences(pick - torch.tensor(row['per_seed']).double().numpy())})
            for name, row in references['baselines'].items()}
        if references.get('placement'):
            result['placement'] = utils.json_numbers(references['placement'])
    if len(estimators) > 1:
        first = _fitness_matrix(sample, estimators[0])
        result['between_estimators'] = {
            name: utils.json_number(rank_stats.kendall_tau_b(first.mean(1), _fitness_matrix(sample, name).mean(1)))
            for name in estimators[1:]}
        if result['agreement'] is not None:  # is an estimator's tau higher than the first's on the same sample?
            result['versus_first'] = {
                name: utils.json_numbers(rank_stats.paired_bootstrap_difference(
                    _fitness_matrix(sample, name), first, reference, rank_stats.kendall_tau_b, args.iterations,
                    args.sample_seed))
                for name in estimators[1:]}
    return result


def _fitness_matrix(sample: List[Candidate], name: str):
    return torch.tensor([c.scores[name] for c in sample], dtype=torch.float64).numpy()


def agreement(sample: List[Candidate], name: str, reference, args, test_images: Optional[int]) -> Dict:
    """The figures of one estimator's fitness against the reference (K x S)."""
    scores = _fitness_matrix(sample, name)
    fit, ref = scores.mean(1), reference.mean(1)
    k = len(sample)
    pick = next(i for i, c in enumerate(sample) if c.pick)
    several_seeds = reference.shape[1] > 1
    top = [i for i, c in enumerate(sample) if c.stratum == 0]
    top_k = max(1, k // 5)
    seed_spread = float(reference.std(1, ddof=1).mean()) if several_seeds else math.nan
    figures = {
        'kendall_tau_b': rank_stats.kendall_tau_b(fit, ref),
        'kendall_tau_b_interval': rank_stats.bootstrap_interval(scores, reference, rank_stats.kendall_tau_b,
                                                                args.iterations, args.sample_seed),
        'spearman_rho': rank_stats.spearman_rho(fit, ref),
        'spearman_rho_interval': rank_stats.bootstrap_interval(scores, reference, rank_stats.spearman_rho,
                                                               args.iterations, args.sample_seed),
        'permutation_p': rank_stats.permutation_pvalue(fit, ref, args.iterations, args.sample_seed),
        'critical_tau': rank_stats.kendall_critical_tau(k),
        'reliability_reference': rank_stats.reliability(reference) if several_seeds else math.nan,
        'reliability_reference_interval': rank_stats.reliability_interval(reference, args.iterations,
                                                                          args.sample_seed),
        'reliability_supernet': rank_stats.reliability(scores) if scores.shape[1] > 1 else math.nan,
        'perfect_supernet': (rank_stats.perfect_supernet_tau(reference, scores, args.iterations, args.sample_seed)
                             if several_seeds else None),
        'top_stratum': {'archs': len(top),
                        'kendall_tau_b': rank_stats.kendall_tau_b(fit[top], ref[top]) if len(top) > 1 else math.nan,
                        'interval': (rank_stats.bootstrap_interval(scores[top], reference[top],
                                                                   rank_stats.kendall_tau_b, args.iterations,
                                                                   args.sample_seed)
                                     if len(top) > 1 else (math.nan, math.nan)),
                        'critical_tau': rank_stats.kendall_critical_tau(len(top))},
        'top_k_overlap': {'k': top_k, **rank_stats.top_k_overlap(fit, ref, top_k, args.sample_seed)},
        'pick': rank_stats.regret(pick, reference),
        'seed_spread': seed_spread,
        'test_sampling_error': (rank_stats.binomial_standard_error(float(ref.mean()), test_images)
                                if test_images else math.nan),
    }
    return utils.json_numbers(figures)


def pool(run_dirs: Sequence[str], iterations: int, seed: int) -> Dict:
    """Several runs' trust.json: per estimator, tau-b in every run, their mean, and the difference from the first
    estimator's pooled over the runs (rank_stats.pooled_paired_difference); printed as a table."""
    results = []
    for run_dir in run_dirs:
        path = os.path.join(run_dir, 'trust', 'trust.json')
        try:
            with open(path) as f:
                results.append(json.load(f))
        except (OSError, ValueError) as e:
            raise utils.UserError(f"cannot read {path} ({utils.reason(e)}): run trust.py --dir {run_dir} "
                                  f"first") from None
        if results[-1]['agreement'] is None:
            raise utils.UserError(f"{path} has no rank agreement (it was measured with --no_reference or a single "
                                  f"architecture)")
    estimators = [name for name in results[0]['estimators'] if all(name in r['estimators'] for r in results)]
    first = estimators[0]

    def matrices(result, name):
        archs = result['architectures']
        return _matrix([a['fitness'][name] for a in archs]), _matrix([a['reference'] for a in archs])

    pooled = {}
    for name in estimators:
        taus = [r['agreement'][name]['kendall_tau_b'] for r in results]
        measured = [t for t in taus if t is not None]  # a constant side leaves tau undefined (null): not a 0
        pooled[name] = {'kendall_tau_b': taus, 'mean': sum(measured) / len(measured) if measured else None}
        if name != first:
            pooled[name]['versus_first'] = rank_stats.pooled_paired_difference(
                [(matrices(r, name)[0], *matrices(r, first)) for r in results], rank_stats.kendall_tau_b, iterations,
                seed)
    lines = [f"{len(results)} runs: " + ', '.join(run_dirs), '',
             '| estimator | tau-b per run | mean | difference from ' + first + ' (pooled, 95 % interval) |',
             '| --- | --- | --- | --- |']
    for name, p in pooled.items():
        versus = p.get('versus_first')
        lines.append(f"| {name} | {', '.join(_f(t) for t in p['kendall_tau_b'])} | {_f(p['mean'])} | "
                     + (f"{_f(versus['difference'])} [{_f(versus['low'])}, {_f(versus['high'])}]" if versus else '')
                     + ' |')
    picks = [r['agreement'][first]['pick'] for r in results]
    lines += ['', "The picks' regret (points, bracketed from below by the held-out seed and from above by all seeds): "
              + ', '.join(f"[{_f(p.get('regret_held_out', p.get('regret')))}, {_f(p['regret_all_seeds'])}]"
                          for p in picks)
              + "; percentile in their samples: " + ', '.join(_f(p['percentile'], 0) for p in picks)]
    print('\n'.join(lines))
    return {'runs': list(run_dirs), 'estimators': pooled, 'picks': picks}


def _matrix(rows):
    """A JSON table (null: not measured) as a float64 array with NaN."""
    return torch.tensor([[math.nan if v is None else v for v in row] for row in rows], dtype=torch.float64).numpy()


def critical_tau_text(k: int) -> str:
    critical = rank_stats.kendall_critical_tau(k)
    if math.isnan(critical):
        return 'no Kendall tau can differ from zero at p < 0.05'
    return f"a Kendall tau must reach {critical:.2f} to differ from zero at p < 0.05"


def _f(value, digits: int = 2) -> str:
    return 'n/a' if value is None else f"{value:.{digits}f}"


def _interval(pair, digits: int = 2) -> str:
    low, high = pair
    return f"[{_f(low, digits)}, {_f(high, digits)}]"


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    measured = [v for v in values if v is not None]
    return sum(measured) / len(measured) if measured else None


def write_markdown(out_dir: str, result: Dict) -> None:
    uniform = result.get('strategy') == 'random'
    how = ('its two picks and the rest drawn uniformly from every architecture the random strategy drew' if uniform
           else 'the pick and a sample stratified by generation and fitness rank')
    lines = [f"# How far this search can be trusted: {os.path.basename(result['run'])}", '',
             f"{result['archs']} distinct architectures of the run ({how}, seed {result['sample_seed']}), each scored "
             f"{result['fitness_seeds']} times on the run's final supernet.", '']
    check = result['exact_fitness_check']
    lines += [f"The pick scored again with its recorded seed: {check['status']}"
              + (f" ({_f(check.get('measured'), 4)} against the recorded {_f(check['recorded'], 4)})."
                 if 'measured' in check else '.'), '']
    reference = result['reference']
    if reference is None:
        lines += ['No reference was measured (--no_reference): only the estimators\' agreement with each other.', '']
    else:
        training = result['training']
        what = (f"a stand-alone reference at {training['epochs']} epochs (C={training['init_channels']}, "
                f"{training['layers']} layers, batch {training['batch_size']}; {reference['metric']})"
                if training else f"NAS-Bench-201's {reference['metric']}")
        lines += [f"Reference: {what}, {len(reference['seeds'])} seed(s).", '']
    if result.get('agreement'):
        lines += _agreement_lines(result)
    if reference is not None:
        lines += _comparator_lines(result) + _baseline_lines(result) + _placement_lines(result)
    if result.get('versus_first'):
        lines += [f"Each estimator's tau minus {result['estimators'][0]}'s on the same sample (paired two-level "
                  f"bootstrap, 95 % interval):", '',
                  '| estimator | difference in tau-b | interval | share of resamples <= 0 |',
                  '| --- | --- | --- | --- |']
        lines += [f"| {name} | {_f(d['difference'])} | [{_f(d['low'])}, {_f(d['high'])}] | {_f(d['p_below_zero'])} |"
                  for name, d in result['versus_first'].items()] + ['']
    if result.get('between_estimators'):
        lines += ['Kendall tau-b of each estimator\'s fitness with the first\'s (' + result['estimators'][0] + '): '
                  + ', '.join(f"{name} {_f(v)}" for name, v in result['between_estimators'].items()) + '.', '']
    lines += ['![fitness against the reference](trust.png)', ''] if os.path.exists(os.path.join(out_dir, 'trust.png')) \
        else []
    atomic_write_text(os.path.join(out_dir, 'trust.md'), '\n'.join(lines))


def _agreement_lines(result: Dict) -> List[str]:
    lines = ['| estimator | tau-b [95 %] | rho [95 %] | p (permutation) | a perfect supernet\'s tau [95 %] '
             '| tau in the top stratum [95 %] | top-k overlap (chance) | pick regret [from below, from above] '
             '| pick percentile |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for name, a in result['agreement'].items():
        perfect, top = a['perfect_supernet'], a['top_stratum']
        lines.append(f"| {name} | {_f(a['kendall_tau_b'])} {_interval(a['kendall_tau_b_interval'])} "
                     f"| {_f(a['spearman_rho'])} {_interval(a['spearman_rho_interval'])} | {_f(a['permutation_p'], 3)} "
                     f"| {_f(perfect and perfect['tau'])} {_interval(perfect['interval']) if perfect else ''} "
                     f"| {_f(top['kendall_tau_b'])} {_interval(top['interval'])} ({top['archs']} archs, "
                     f"p < 0.05 needs {_f(top['critical_tau'])}) "
                     f"| {a['top_k_overlap']['overlap']} of {a['top_k_overlap']['k']} "
                     f"({_f(a['top_k_overlap']['chance'])}) "
                     f"| [{_f(a['pick']['regret_held_out'])}, {_f(a['pick']['regret_all_seeds'])}] "
                     f"| {_f(a['pick']['percentile'], 0)} |")
    first = next(iter(result['agreement'].values()))
    perfect = first['perfect_supernet']
    lines += ['', f"- With {result['archs']} architectures {critical_tau_text(result['archs'])}. The intervals "
                  f"(bootstrap over architectures, then seeds and draws) cover the tau between the means of these "
                  f"seeds and draws, not the agreement with the ranking endless seeds would give, which is lower.",
              f"- Reliability of the reference across seeds: {_f(first['reliability_reference'])} "
              f"{_interval(first['reliability_reference_interval'])} (rank correlation between seeds, stepped up to "
              f"their mean; bootstrap over architectures); of the supernet across fitness draws: "
              f"{_f(first['reliability_supernet'])}.",
              "- A perfect supernet's tau: what a supernet whose mean ranking is exactly the reference's would be "
              "expected to show through this much noise (both sides as monotone transforms of a bivariate normal). "
              "A model's expectation, not a bound: an observed tau exceeds it about as often as not.",
              f"- The reference's spread between seeds: {_f(first['seed_spread'])} points on average; the test "
              f"set's own sampling error: {_f(first['test_sampling_error'])} points"
              + (f" ({result['test_images']} images)." if result.get('test_images') else '.'),
              "- The pick's regret, the best architecture's accuracy minus the pick's, bracketed: from below, the best "
              "chosen on all seeds but one, both measured on the seed left out (averaged over every seed left out); "
              "from above, the best on the mean of all seeds (a lucky mean). Its percentile: the share of the "
              "sample below it.",
              "- Tau over the whole sample is wider than what the GA decides among (a converged last generation "
              "leaves little to rank); the top stratum (each generation's best third) is closer to that.", '']
    warnings = []
    if result['archs'] < MIN_ARCHS:
        warnings.append(f"only {result['archs']} architectures: {critical_tau_text(result['archs'])}")
    if perfect is not None:
        low, high = perfect['interval']
        if high is not None and high < LOW_CEILING:
            warnings.append(f"even a perfect supernet would be expected to reach a tau of only {_f(perfect['tau'])} "
                            f"(at most {_f(high)} within the interval): {_noisier_side(first)}")
        elif low is not None and low < LOW_CEILING:
            warnings.append(f"a perfect supernet's tau is uncertain, {_interval(perfect['interval'])}: "
                            f"{_noisier_side(first)}")
    return lines + [f"**Warning:** {w}." for w in warnings] + ([''] if warnings else [])


def _noisier_side(row: Dict) -> str:
    """Which side's noise holds a perfect supernet's tau down, and what lowers it; with the reliabilities the
    report states above it (Spearman's, the order the same as the Pearson-scale ones the perfect tau uses)."""
    reference, supernet = row['reliability_reference'], row['reliability_supernet']
    if supernet is not None and reference is not None and supernet < reference:
        return (f"the fitness draws disagree with each other (their reliability {_f(supernet)}, the reference's "
                f"{_f(reference)}): one fitness measurement ranks these architectures little better than chance "
                f"(more draws, --fitness_seeds, tell the mean apart; the search itself takes one)")
    return (f"the reference is mostly noise at this size (its reliability {_f(reference)}); train longer "
            f"(--epochs), with more seeds (--seeds), or on a harder task")


def _reference_mean(architecture: Dict) -> Optional[float]:
    return _mean(architecture.get('reference') or [])


def _comparator_lines(result: Dict) -> List[str]:
    """A random-strategy run: what each way of picking from it reached."""
    if result.get('strategy') != 'random':
        return []
    archs = result['architectures']
    pick = next(a for a in archs if a['pick'])
    shared = next((a for a in archs if a['weight_sharing_pick']), None)
    drawn = [m for m in (_reference_mean(a) for a in archs if not (a['pick'] or a['weight_sharing_pick']))
             if m is not None]
    lines = ['What picking at random with the same supernet reached (the reference, mean over seeds):', '',
             f"- its last generation's best (the GA without selection): {_f(_reference_mean(pick))}"]
    if shared is not None:
        lines.append(f"- random search with weight sharing (the best of every draw on the final supernet): "
                     f"{_f(_reference_mean(shared))}")
    if drawn:
        spread = (f" +- {_f(float(torch.tensor(drawn).std()) / math.sqrt(len(drawn)))} (standard error)"
                  if len(drawn) > 1 else '')
        lines.append(f"- a uniformly random architecture (the mean of {len(drawn)} drawn uniformly): "
                     f"{_f(_mean(drawn))}{spread}")
    return lines + ['']


def _baseline_lines(result: Dict) -> List[str]:
    baselines = result.get('baselines') or {}
    if not baselines:
        return []
    pick = next(a for a in result['architectures'] if a['pick'])
    lines = [f"The pick ({_f(_reference_mean(pick))}) against published cells trained with the same recipe and seeds "
             f"(paired by seed; a t interval over {len(result['reference']['seeds'])} seeds, the sign-flip p):", '',
             '| cell | reference (mean over seeds) | the pick minus it [95 %] | p | parameters (M) |',
             '| --- | ---: | --- | ---: | ---: |']
    for name, b in baselines.items():
        d = b['pick_minus_this']
        lines.append(f"| {name} | {_f(_mean(b['reference']))} | {_f(d['mean'])} [{_f(d['low'])}, {_f(d['high'])}] "
                     f"| {_f(d['p'], 3)} | {_f(b['params_mb'], 3)} |")
    return lines + ['']


def _placement_lines(result: Dict) -> List[str]:
    placement = result.get('placement') or {}
    lines = []
    for role, label in (('pick', 'The pick'), ('weight_sharing_pick', 'The weight-sharing pick')):
        if role in placement:
            p = placement[role]
            lines.append(f"{label} among all {p['architectures']} architectures of NAS-Bench-201: test accuracy "
                         f"{_f(p['test'])} %, {_f(p['gap'])} points below the space's best ({_f(p['best_test'])} %), "
                         f"above {_f(p['percentile'], 1)} % of them.")
    return lines + [''] if lines else []


def plot(out_dir: str, result: Dict) -> Optional[str]:
    """trust.png: each architecture's fitness (mean over draws) against its reference (mean and range over
    seeds), the pick marked; nothing without matplotlib or a reference."""
    if result['reference'] is None:
        return None
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    name = result['estimators'][0]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for arch in result['architectures']:
        fit = [v for v in arch['fitness'][name] if v is not None]
        ref = [v for v in arch['reference'] if v is not None]
        if not fit or not ref:
            continue
        x, y = sum(fit) / len(fit), sum(ref) / len(ref)
        ax.errorbar(x, y, yerr=[[y - min(ref)], [max(ref) - y]], fmt='*' if arch['pick'] else 'o',
                    color='C3' if arch['pick'] else 'C0', markersize=12 if arch['pick'] else 5, capsize=2)
    ax.set_xlabel(f"supernet fitness ({name}, %)")
    ax.set_ylabel(f"reference ({result['reference']['kind']}, %)")
    tau = result['agreement'][name]['kendall_tau_b'] if result['agreement'] else None
    ax.set_title(f"Kendall tau-b {_f(tau)}; the pick is the star")
    fig.tight_layout()
    path = os.path.join(out_dir, 'trust.png')
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == '__main__':
    sys.exit(stopping.run_main(main, parse_args()))
