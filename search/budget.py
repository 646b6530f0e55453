"""Budgets of a search: limits on the parameters and multiply-accumulates of what it finds.

Each individual's architecture is measured at the size it will be trained (`--budget_size`), with
cost.count_macs's convention (convolutions and linear layers, the auxiliary head excluded), once per
architecture. Selection then uses constraint domination (Deb, 2000; architect_evolution.sort_population): a
feasible individual beats an infeasible one, two infeasible ones compare by how far over budget they are, two
feasible ones by fitness. Without a limit nothing is measured and the search is EvNAS's.
"""
import math
from typing import Dict, Optional, Sequence

import torch

from architect_evolution import Individual
from runtime.settings import BudgetSettings
from search_space import SearchSpace

SIZES = ('cifar', 'imagenet')


class Budget:
    """--max_params and --max_macs (millions) at --budget_size, for one search space and dataset."""

    def __init__(self, space: SearchSpace, max_params: Optional[float], max_macs: Optional[float], size: str,
                 num_classes: int):
        self.space, self.size, self.num_classes = space, size, num_classes
        self.limits = {k: v * 1e6 for k, v in (('params', max_params), ('macs', max_macs)) if v is not None}
        self._costs: Dict[str, Dict[str, float]] = {}

    @classmethod
    def of(cls, settings: BudgetSettings, space: SearchSpace, num_classes: int) -> Optional['Budget']:
        """The budget of a search's settings, or None without --max_params and --max_macs."""
        if not settings.limited:
            return None
        return cls(space, settings.max_params, settings.max_macs, settings.size, num_classes)

    def describe(self) -> str:
        limits = ', '.join(f"{value / 1e6:g} M {name}" for name, value in self.limits.items())
        return f"at most {limits} at the {self.size} size ({self.space.cost_size(self.size)})"

    def cost(self, alphas: Sequence[torch.Tensor]) -> Dict[str, float]:
        """{'params', 'macs'} of the architecture `alphas` stand for (measured once per architecture)."""
        key = str(self.space.genotype(alphas))
        if key not in self._costs:
            with torch.random.fork_rng(devices=[]):  # building the network must not move the run's random streams
                self._costs[key] = self.space.cost(alphas, self.size, self.num_classes)
        return self._costs[key]

    def violation(self, cost: Dict[str, float]) -> float:
        """How far over budget: the sum over the limits of the relative excess (0 when feasible)."""
        return sum(max(0., cost[name] / limit - 1.) for name, limit in self.limits.items())

    def assess(self, population: Sequence[Individual]) -> None:
        """Set every individual's cost and violation."""
        for individual in population:
            individual.cost = self.cost(individual.alphas)
            individual.violation = self.violation(individual.cost)


def is_feasible(individual: Individual) -> bool:
    return individual.violation == 0.


def pareto_front(points: Sequence[Dict]) -> Sequence[int]:
    """The indices of the points no other point dominates, for higher 'fitness' and lower 'macs'."""
    front = []
    for i, p in enumerate(points):
        if math.isnan(p['fitness']):
            continue
        dominated = any(q['fitness'] >= p['fitness'] and q['macs'] <= p['macs']
                        and (q['fitness'] > p['fitness'] or q['macs'] < p['macs'])
                        for j, q in enumerate(points) if j != i and not math.isnan(q['fitness']))
        if not dominated:
            front.append(i)
    return front
