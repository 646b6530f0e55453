"""What a search shows and keeps of each generation: the summary row of the log, generations/gen_NNN.json,
TensorBoard scalars (when tensorboard is installed), and at the end genotype.json and report.md; files on
rank 0 only."""
import json
import logging
import math
import os
from typing import Callable, Dict, List, Sequence

import utils
from architect_evolution import Individual, count_distinct
from cost import describe_cost
from inputs.nb201 import Benchmark
from runtime import logs, memory
from runtime.checkpoint import atomic_write_text
from search.budget import is_feasible
from search_space import SearchSpace
from stats import rank_stats


def summarize(ranked: Sequence[Individual], train_stats: Sequence[Dict], generation: int, lr: float,
              space: SearchSpace, **timings: float) -> Dict:
    fitness = [ind.fitness for ind in ranked if not math.isnan(ind.fitness)]
    train_stats = [t for t in train_stats if t['samples']]
    seen = sum(t['samples'] for t in train_stats)
    return {
        'generation': generation,
        'lr': lr,
        'best': max(fitness, default=math.nan),
        'mean': sum(fitness) / len(fitness) if fitness else math.nan,
        'worst': min(fitness, default=math.nan),
        'distinct_genotypes': count_distinct(ranked, space.genotype),
        'train_loss': sum(t['loss'] * t['samples'] for t in train_stats) / max(seen, 1),
        'train_top1': sum(t['top1'] * t['samples'] for t in train_stats) / max(seen, 1),
        **({'feasible': sum(map(is_feasible, ranked))} if ranked and ranked[0].cost is not None else {}),
        **({'best_latency_ms': ranked[0].cost['latency_ms']} if ranked and 'latency_ms' in (ranked[0].cost or {})
           else {}),
        **timings,
    }


def population_tau(ranked: Sequence[Individual], benchmark: Benchmark, space: SearchSpace) -> float:
    """Kendall tau-b of the population's fitness against the benchmark's 200-epoch test accuracy (mean over its
    seeds): how well the supernet ranks this generation (NaN where it cannot be told: fewer than two measured
    individuals in the benchmark, or a constant side)."""
    pairs = []
    for individual in ranked:
        truth = benchmark.lookup(space.genotype(individual.alphas))
        if truth is not None and not math.isnan(individual.fitness):
            pairs.append((individual.fitness, truth['test']))
    if len(pairs) < 2:
        return math.nan
    return rank_stats.kendall_tau_b([f for f, _ in pairs], [t for _, t in pairs])


def generation_record(ranked: Sequence[Individual], train_stats: Sequence[Dict], summary: Dict,
                      order: Sequence[int], seeds: Sequence[int], space: SearchSpace) -> Dict:
    """The human-readable record of one generation, best individual first. Each individual's fitness seed (its
    batch order and augmentation draws) lets trust.py measure its fitness again exactly."""
    return {
        **{k: utils.json_number(v) if isinstance(v, float) else v for k, v in summary.items()},
        'population': [{
            'rank': rank + 1,
            'index': order[rank],  # position in the generation as trained (step i trains index i mod pop_size)
            'fitness': utils.json_number(ind.fitness),
            'loss': utils.json_number(ind.loss),
            'top5': utils.json_number(ind.top5),
            'fitness_seed': int(seeds[order[rank]]),
            'train_loss': utils.json_number(train_stats[order[rank]]['loss']),
            'train_top1': utils.json_number(train_stats[order[rank]]['top1']),
            **space.record(ind.alphas),  # its genotype (DARTS) or arch string (NAS-Bench-201), and raw alphas
            **({} if ind.cost is None else {**ind.cost, 'feasible': is_feasible(ind)}),  # params, macs, latency_ms
        } for rank, ind in enumerate(ranked)],
    }


class Records:
    """What a search shows and keeps: one log row and generations/gen_NNN.json per generation, TensorBoard
    scalars when tensorboard is installed, genotype.json and the report at the end (files on rank 0 only)."""

    def __init__(self, run_dir: str, is_main: bool, logger: logging.Logger, epochs: int, generations_done: int,
                 space: SearchSpace, write_report: Callable[[str], Dict]):
        """`write_report(run_dir)` writes report.md at the end and returns its summary (report.py's)."""
        self.run_dir, self.is_main, self.logger, self.space = run_dir, is_main, logger, space
        self.write_report = write_report
        self.epochs, self.first = epochs, generations_done
        self.writer = logs.summary_writer(os.path.join(run_dir, 'runs'), logger) if is_main else None
        self.timer = logs.Timer()
        self.genotype_path = os.path.join(run_dir, 'genotype.json')

    def write(self, generation: int, ranked: Sequence[Individual], train_stats: Sequence[Dict], summary: Dict,
              order: Sequence[int], seeds: Sequence[int], elapsed_before: float) -> None:
        elapsed = elapsed_before + self.timer.elapsed()
        remaining = self.timer.remaining(generation - self.first, self.epochs - self.first)
        self.logger.info(f"gen {generation:3d}/{self.epochs} | best {summary['best']:6.2f} "
                         f"| mean {summary['mean']:6.2f} | worst {summary['worst']:6.2f} "
                         f"| distinct {summary['distinct_genotypes']:3d}/{len(ranked)} "
                         + (f"| feasible {summary['feasible']:3d}/{len(ranked)} " if 'feasible' in summary else '')
                         + (f"| best's latency {summary['best_latency_ms']:.2f} ms " if 'best_latency_ms' in summary
                            else '')
                         + f"| train loss {summary['train_loss']:.4f} "
                         + ''.join(f"| {phase} peak {memory.gb(summary['memory_mb'][phase])} "
                                   for phase in ('train', 'fitness') if phase in summary.get('memory_mb', {}))
                         + f"| elapsed {logs.format_duration(elapsed)} "
                         f"| eta {logs.format_duration(remaining)}")
        if 'benchmark' in summary:
            truth = summary['benchmark']
            self.logger.info(f"gen {generation:3d}/{self.epochs} | best {self.space.describe(ranked[0].alphas)}: "
                             + (f"NAS-Bench-201 #{truth['index']}, test {truth['test']:.2f}, "
                                f"valid {truth['valid']:.2f} (200 epochs)" if truth
                                else "not in the NAS-Bench-201 file")
                             + f" | population's Kendall tau with the benchmark {summary['benchmark_tau']:.3f}")
        if not self.is_main:
            return
        atomic_write_text(os.path.join(self.run_dir, 'generations', f'gen_{generation:03d}.json'),
                          json.dumps(generation_record(ranked, train_stats, summary, order, seeds, self.space),
                                     allow_nan=False) + '\n')
        if self.writer is not None:
            for key in ('best', 'mean', 'worst'):
                self.writer.add_scalar(f'fitness/{key}', summary[key], generation)
            self.writer.add_scalar('population/distinct_genotypes', summary['distinct_genotypes'], generation)
            if 'feasible' in summary:
                self.writer.add_scalar('population/feasible_share', summary['feasible'] / len(ranked), generation)
            for key in ('loss', 'top1'):
                self.writer.add_scalar(f'train/{key}', summary[f'train_{key}'], generation)
            self.writer.add_scalar('train/lr', summary['lr'], generation)
            for key in ('test', 'valid'):
                if summary.get('benchmark'):
                    self.writer.add_scalar(f'benchmark/{key}_accuracy', summary['benchmark'][key], generation)
            if 'benchmark_tau' in summary:
                self.writer.add_scalar('benchmark/kendall_tau', summary['benchmark_tau'], generation)
            self.writer.flush()

    def best(self, individual: Individual) -> None:
        """The search's result: the best individual of the last generation."""
        if self.is_main:
            self.space.save_result(individual.alphas, self.genotype_path)
        self.logger.info(f"best architecture (fitness {individual.fitness:.2f}): "
                         f"{self.space.describe(individual.alphas)}")
        if math.isnan(individual.fitness):
            self.logger.warning("the best-ranked individual's fitness could not be measured (non-finite loss): "
                                "genotype.json holds an architecture without a measured fitness")
        if individual.cost is not None:
            cost = f"{individual.cost['params'] / 1e6:.3f} M parameters, {individual.cost['macs'] / 1e6:.1f} M MACs" + (
                f", {individual.cost['latency_ms']:.2f} ms predicted" if 'latency_ms' in individual.cost else '')
            if is_feasible(individual):
                self.logger.info(f"it fits the budget: {cost}")
            else:
                self.logger.warning(f"no individual of the last generation fits the budget: genotype.json holds the "
                                    f"least infeasible one ({cost}); loosen the budget or search longer")

    def finish(self, history: List[Dict], population: List[Individual], ended_now: bool) -> Dict:
        """The report and the next step, where this process did work (`ended_now`); a run resumed after it had
        ended does nothing."""
        if self.writer is not None:
            self.writer.close()
        if not ended_now:
            self.logger.info(f"{self.run_dir} already completed its {self.epochs} generations; nothing to do")
        elif self.is_main:
            summary = self.write_report(self.run_dir)
            for label, key in (('CIFAR (C=36, 20 layers)', 'cifar'), ('ImageNet (C=48, 14 layers)', 'imagenet')):
                if key in summary['costs']:
                    self.logger.info(f"cost of the best architecture, {describe_cost(summary['costs'][key], label)}")
            self.logger.info(f"saved {self.genotype_path}, its diagram and {os.path.join(self.run_dir, 'report.md')}; "
                             f"{summary['next_step']}")
        logs.close_logger(self.logger)
        return {'run_dir': self.run_dir, 'history': history, 'population': population,
                'genotype_path': self.genotype_path}

