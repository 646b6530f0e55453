"""Random search with weight sharing (Li & Talwalkar, 2019), the end of a `train_search.py --strategy random` run.

The random strategy runs EvNAS's loop without selection: each generation is drawn afresh, trains the supernet
and is scored like the GA's. Its own pick is the last generation's best, as the GA's (genotype.json). Li &
Talwalkar's method picks differently: every architecture drawn during the run is scored again on the final
supernet, and the best of them all is the pick. That costs one more fitness call per distinct architecture
drawn (about the fitness cost of the whole search again), and it is written apart from the run's own result:
RUN_DIR/weight_sharing.json (every score, the cost) and genotype_weight_sharing.json (the pick).
"""
import json
import logging
import math
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

import utils
from architect_evolution import Individual, sort_population
from fitness import Estimator, draw_seeds, scored
from runtime.checkpoint import atomic_write_text
from search.budget import Budget, is_feasible
from search_space import SearchSpace

RESULT, GENOTYPE = 'weight_sharing.json', 'genotype_weight_sharing.json'
SEED_OFFSET = 5  # the scores' seeds come from make_generator(--seed + 5), a stream no other part of a search uses


class Draws:
    """Every distinct architecture a random-strategy run drew, in the order first drawn (a checkpoint keeps it)."""

    def __init__(self, space: SearchSpace, state: Optional[List[List[torch.Tensor]]] = None):
        self.space = space
        self.alphas: Dict[str, List[torch.Tensor]] = {}
        for alphas in state or []:
            self.add(alphas)

    def add(self, alphas: Sequence[torch.Tensor]) -> None:
        self.alphas.setdefault(self.space.key(alphas), [a.clone() for a in alphas])

    def state(self) -> List[List[torch.Tensor]]:
        return list(self.alphas.values())


def done(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, RESULT))


def score_every_draw(draws: Draws, score: Callable[[List[Individual], List[int]], None], seed: int,
                     estimator: Estimator, budget: Optional[Budget]) -> Dict:
    """Every drawn architecture scored on the final supernet (`score(individuals, seeds)` sets their fitness),
    each with its own fitness seed; the best (constraint domination under a budget) is the pick."""
    individuals = [scored(alphas) for alphas in draws.alphas.values()]
    seeds = draw_seeds(estimator, utils.make_generator(seed + SEED_OFFSET), len(individuals))
    started = time.time()
    score(individuals, seeds)
    seconds = time.time() - started
    if budget is not None:
        budget.assess(individuals)
    ranked = sort_population(individuals)
    pick = ranked[0]
    return {'individuals': individuals, 'seeds': seeds, 'pick': pick, 'seconds': seconds}


def write(run_dir: str, space: SearchSpace, result: Dict, generations: int, search_fitness_seconds: float) -> None:
    """weight_sharing.json and genotype_weight_sharing.json."""
    individuals: List[Individual] = result['individuals']
    pick: Individual = result['pick']
    record = {
        'method': 'random search with weight sharing (Li & Talwalkar, 2019): every architecture the run drew, '
                  'scored on its final supernet; the best is the pick',
        'architectures': len(individuals),
        'generations': generations,
        'fitness_calls': len(individuals),
        'seconds': result['seconds'],
        'search_fitness_seconds': search_fitness_seconds,
        'pick': {'fitness': utils.json_number(pick.fitness), **space.record(pick.alphas)},
        'scored': [{'fitness': utils.json_number(ind.fitness), 'loss': utils.json_number(ind.loss),
                    'fitness_seed': int(seed), **space.record(ind.alphas),
                    **({} if ind.cost is None else {**ind.cost, 'feasible': is_feasible(ind)})}
                   for ind, seed in zip(individuals, result['seeds'])],
    }
    space.save_result(pick.alphas, os.path.join(run_dir, GENOTYPE))
    atomic_write_text(os.path.join(run_dir, RESULT), json.dumps(record, allow_nan=False) + '\n')


def log(logger: logging.Logger, space: SearchSpace, result: Dict, search_fitness_seconds: float) -> None:
    pick = result['pick']
    logger.info(f"random search with weight sharing: {len(result['individuals'])} distinct architectures drawn, "
                f"each scored on the final supernet ({len(result['individuals'])} more fitness calls, "
                f"{result['seconds']:.0f} s; the generations' fitness took {search_fitness_seconds:.0f} s)")
    logger.info(f"its pick (fitness {pick.fitness:.2f}): {space.describe(pick.alphas)}")
    if math.isnan(pick.fitness):
        logger.warning("the best-ranked architecture's fitness could not be measured (non-finite loss)")


def read(run_dir: str) -> Optional[Dict]:
    """weight_sharing.json of a random-strategy run, or None."""
    path = os.path.join(run_dir, RESULT)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise utils.UserError(f"cannot read {path}: {utils.reason(e)}") from None
