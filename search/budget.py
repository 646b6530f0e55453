"""Budgets of a search: limits on the parameters, multiply-accumulates and latency of what it finds.

Each individual's architecture is measured at the size it will be trained (`--budget_size`), with
cost.count_macs's convention (convolutions and linear layers, the auxiliary head excluded), once per
architecture; its latency is predicted from a table measured on the target (search/latency.py). Selection
then uses constraint domination (Deb, 2000; architect_evolution.sort_population): a feasible individual beats
an infeasible one, two infeasible ones compare by how far over budget they are, two feasible ones by fitness.
Without a limit nothing is measured and the search is EvNAS's.
"""
import math
from typing import Dict, Optional, Sequence

import torch

from architect_evolution import Individual
from runtime.settings import BudgetSettings
from search.latency import LatencyTable, TableError
from search_space import SearchSpace

SIZES = ('cifar', 'imagenet')


class Budget:
    """--max_params and --max_macs (millions) at --budget_size, and --max_latency (ms) predicted from a latency
    table, for one search space and dataset."""

    def __init__(self, space: SearchSpace, max_params: Optional[float], max_macs: Optional[float], size: str,
                 num_classes: int, max_latency: Optional[float] = None, table: Optional[LatencyTable] = None):
        self.space, self.size, self.num_classes, self.table = space, size, num_classes, table
        self.limits = {k: v * 1e6 for k, v in (('params', max_params), ('macs', max_macs)) if v is not None}
        if max_latency is not None:
            self.limits['latency_ms'] = max_latency
        self._costs: Dict[str, Dict[str, float]] = {}

    @classmethod
    def of(cls, settings: BudgetSettings, space: SearchSpace, num_classes: int) -> Optional['Budget']:
        """The budget of a search's settings, or None without --max_params, --max_macs and --max_latency."""
        if not settings.limited:
            return None
        table = None
        if settings.max_latency is not None:
            table = LatencyTable.read(settings.latency_table)
            if settings.latency_table_sha256 not in (None, table.sha256):
                raise TableError(f"latency table {settings.latency_table} changed after the command line was read; "
                                 f"run the command again")
            check_table(table, space.name, settings.size, num_classes, settings.latency_table)
        return cls(space, settings.max_params, settings.max_macs, settings.size, num_classes, settings.max_latency,
                   table)

    def describe(self) -> str:
        limits = ', '.join(f"{value / 1e6:g} M {name}" for name, value in self.limits.items() if name != 'latency_ms')
        said = f"at most {limits} at the {self.size} size ({self.space.cost_size(self.size)})" if limits else 'at most'
        if self.table is not None:
            said += (f"{' and' if limits else ''} {self.limits['latency_ms']:g} ms predicted for "
                     f"{self.table.network.describe()}, from a table of {self.table.describe()}")
        return said

    def cost(self, alphas: Sequence[torch.Tensor]) -> Dict[str, float]:
        """{'params', 'macs'} of the architecture `alphas` stand for, and 'latency_ms' with a latency table
        (measured once per architecture)."""
        key = str(self.space.genotype(alphas))
        if key not in self._costs:
            with torch.random.fork_rng(devices=[]):  # building the network must not move the run's random streams
                self._costs[key] = self.space.cost(alphas, self.size, self.num_classes)
            if self.table is not None:
                self._costs[key]['latency_ms'] = self.table.predict(self.space.genotype(alphas))
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


def check_table(table: LatencyTable, space: str, size: str, num_classes: int, path: str) -> None:
    """A search may use any table built for its space, --budget_size and classes (on any machine)."""
    network = table.network
    if (network.space, network.size) != (space, size):
        raise TableError(f"latency table {path} is for the {network.space} space at the {network.size} size; this "
                         f"search is the {space} space at --budget_size {size}: build one with latency_table.py "
                         f"--space {space} --budget_size {size}")
    if network.num_classes != num_classes and size == 'cifar':
        raise TableError(f"latency table {path} is for {network.num_classes} classes; this search's data has "
                         f"{num_classes}: build one with latency_table.py --num_classes {num_classes}")


def pareto_front(points: Sequence[Dict], cost: str = 'macs') -> Sequence[int]:
    """The indices of the points no other point dominates, for higher 'fitness' and lower `cost`."""
    front = []
    for i, p in enumerate(points):
        if math.isnan(p['fitness']):
            continue
        dominated = any(q['fitness'] >= p['fitness'] and q[cost] <= p[cost]
                        and (q['fitness'] > p['fitness'] or q[cost] < p[cost])
                        for j, q in enumerate(points) if j != i and not math.isnan(q['fitness']))
        if not dominated:
            front.append(i)
    return front
