"""The genetic algorithm of EvNAS (Sinha & Chen, GECCO 2021): individuals, decoding, selection, crossover,
mutation.

An individual is a list of architecture matrices (edges x ops) drawn from U(0, 1): in the DARTS space a pair
(normal, reduce) of 14 x 8, in NAS-Bench-201 one 6 x 5 (search_space.py decodes that one). It is never used
as is: `decode` turns it into the discrete architecture it stands for, and the supernet is run with those
decoded alphas. Selection, crossover and mutation work on edge rows whatever the space. All randomness comes
from an explicit torch.Generator.
"""
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from genotypes import NONE_INDEX, PRIMITIVES, Genotype, num_edges, num_steps


def _decode_cell(alphas: torch.Tensor) -> List[Tuple[int, int]]:
    """(edge row, op index) of the kept edges of one cell, two per node, in ranked order."""
    probs = F.softmax(alphas.detach().float().cpu(), dim=-1)
    # Each edge's op is its argmax, or its second-largest when the argmax is `none`; that is the best
    # non-`none` op, with ties going to the lower index as torch.argmax gives them. `none` is the first
    # primitive, as in DARTS (tests/test_genotypes.py checks it), so the others are the columns after it.
    ops = probs[:, NONE_INDEX + 1:].argmax(dim=-1) + NONE_INDEX + 1
    strength = probs.gather(1, ops[:, None]).squeeze(1).tolist()
    ops = ops.tolist()
    kept = []
    offset = 0
    for node in range(num_steps(alphas.shape[0])):
        inputs = range(node + 2)
        # A stable descending sort: equal probabilities keep edge order. The genotype lists the two kept
        # edges in this ranked order, not by input index (the published EvNAS genotypes depend on it).
        ranked = sorted(inputs, key=lambda j: -strength[offset + j])[:2]
        kept.extend((offset + j, ops[offset + j]) for j in ranked)
        offset += len(inputs)
    return kept


def _row_input(row: int) -> int:
    """The input index (0 = c_{k-2}, 1 = c_{k-1}, 2.. = nodes) of an edge row."""
    node = 0
    while row >= node + 2:
        row -= node + 2
        node += 1
    return row


def derive_cell(alphas: torch.Tensor) -> List[Tuple[str, int]]:
    return [(PRIMITIVES[op], _row_input(row)) for row, op in _decode_cell(alphas)]


def derive_genotype(alphas: Sequence[torch.Tensor], multiplier: int = 4) -> Genotype:
    """The genotype an individual (or the supernet's alphas) stands for; concat = the last `multiplier` nodes."""
    normal, reduce = alphas
    steps = num_steps(normal.shape[0])
    concat = list(range(2 + steps - multiplier, steps + 2))
    return Genotype(normal=derive_cell(normal), normal_concat=concat, reduce=derive_cell(reduce),
                    reduce_concat=concat)


def decode(alphas: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """[normal, reduce] as one-hot matrices: 1 at (edge, op) of each kept edge, 0 elsewhere.

    NOTE (faithful to EvNAS): the supernet still applies softmax to these, so a chosen op gets weight
    e/(e+7) = 0.280 and its siblings 1/(e+7) = 0.103, and an edge that is not kept gives every op 0.125;
    the unchosen ops keep contributing to the output and to the shared weights' gradients.
    """
    decoded = []
    for cell in alphas:
        one_hot = torch.zeros_like(cell)
        for row, op in _decode_cell(cell):
            one_hot[row, op] = 1.
        decoded.append(one_hot)
    return decoded


@dataclass
class Individual:
    """One architecture: raw alphas (CPU, float32; [normal, reduce] in the DARTS space) and its last measured
    fitness."""
    alphas: List[torch.Tensor]
    fitness: float = math.nan   # top-1 accuracy (%) on the held-out images
    loss: float = math.nan
    top5: float = math.nan
    # With a budget (search/budget.py): the cost of the architecture ({'params', 'macs'}) and how far over the budget
    # it is (0: feasible). Without one every individual is feasible, and selection is by fitness alone.
    cost: Optional[Dict[str, float]] = None
    violation: float = 0.

    def to_state(self) -> Dict:
        return {'alphas': [a.clone() for a in self.alphas], 'fitness': self.fitness, 'loss': self.loss,
                'top5': self.top5}

    @classmethod
    def from_state(cls, state: Dict) -> 'Individual':
        return cls([a.clone() for a in state['alphas']], state['fitness'], state['loss'], state['top5'])


def darts_shapes(steps: int = 4) -> List[Tuple[int, int]]:
    """The alpha matrices of a DARTS-space individual: (normal, reduce), each edges x PRIMITIVES."""
    return [(num_edges(steps), len(PRIMITIVES))] * 2


def random_individual(shapes: Sequence[Tuple[int, int]], generator: torch.Generator) -> Individual:
    """U(0, 1) matrices of the given shapes, drawn in order (EvNAS's initialisation)."""
    return Individual([torch.rand(shape, generator=generator) for shape in shapes])


def init_population(pop_size: int, shapes: Sequence[Tuple[int, int]], generator: torch.Generator) -> List[Individual]:
    return [random_individual(shapes, generator) for _ in range(pop_size)]


class NoFeasibleDraw(ValueError):
    """No random draw was accepted (random_population)."""


def random_population(pop_size: int, shapes: Sequence[Tuple[int, int]], generator: torch.Generator,
                      accept: Optional[Callable[[Individual], bool]] = None, max_draws: int = 100000
                      ) -> List[Individual]:
    """A generation of the random strategy (the GA without selection): drawn as EvNAS draws its first one. With
    `accept` (a budget's feasibility) each individual is drawn again until accepted, since random search, unlike
    the GA, cannot move towards the feasible region; NoFeasibleDraw after `max_draws` draws in a row rejected."""
    if accept is None:
        return init_population(pop_size, shapes, generator)
    population: List[Individual] = []
    rejected = 0
    while len(population) < pop_size:
        individual = random_individual(shapes, generator)
        if accept(individual):
            population.append(individual)
            rejected = 0
        elif (rejected := rejected + 1) >= max_draws:
            raise NoFeasibleDraw(f"{max_draws} random architectures in a row were rejected")
    return population


def _rank_key(individual: Individual) -> Tuple[float, float]:
    """Constraint domination (Deb, 2000): a feasible individual (violation 0) beats an infeasible one, two
    infeasible ones compare by how far over budget they are, and equal violations (two feasible ones) by
    fitness. An individual whose evaluation gave NaN ranks below every measured one of its violation."""
    return -individual.violation, -math.inf if math.isnan(individual.fitness) else individual.fitness


def sort_population(population: Sequence[Individual]) -> List[Individual]:
    """Best first; a stable sort, so equal keys keep population order (as Python's sort in EvNAS). Without a
    budget every violation is 0, and this is EvNAS's ranking by fitness."""
    return sorted(population, key=_rank_key, reverse=True)


def tournament_selection(population: Sequence[Individual], tsize: int, generator: torch.Generator) -> Individual:
    """The best (sort_population) of `tsize` individuals drawn without replacement; ties go to the one drawn
    first."""
    drawn = torch.randperm(len(population), generator=generator)[:tsize].tolist()
    return sort_population([population[i] for i in drawn])[0]


def crossover(parent1: Individual, parent2: Individual, generator: torch.Generator) -> Individual:
    """Uniform crossover over edge rows: each row of each cell comes whole from one parent, p = 1/2 each.

    NOTE (faithful to EvNAS): rows, not single alphas, are the genes, so an edge's op scores stay together.
    """
    child = []
    for a, b in zip(parent1.alphas, parent2.alphas):
        from_first = torch.rand(a.shape[0], generator=generator) >= 0.5
        child.append(torch.where(from_first[:, None], a, b))
    return Individual(child)


def mutate(individual: Individual, mutate_rate: float, generator: torch.Generator) -> Individual:
    """Replace each edge row, with probability `mutate_rate`, by a fresh U(0, 1) row (EvNAS's row mutation)."""
    mutated = []
    for a in individual.alphas:
        hit = torch.rand(a.shape[0], generator=generator) < mutate_rate
        fresh = torch.rand(a.shape, generator=generator)
        mutated.append(torch.where(hit[:, None], fresh, a))
    return Individual(mutated)


def evolve(population: Sequence[Individual], num_elites: int, tsize: int, mutate_rate: float,
           generator: torch.Generator) -> List[Individual]:
    """The next generation: the `num_elites` best (with a budget: the best feasible, or least infeasible) pass
    unchanged; the rest are mutated crossover children of two tournament winners. `population` need not be
    sorted."""
    ranked = sort_population(population)
    elites = [Individual([a.clone() for a in ind.alphas]) for ind in ranked[:num_elites]]
    children = []
    while len(elites) + len(children) < len(ranked):
        parent1 = tournament_selection(ranked, tsize, generator)
        parent2 = tournament_selection(ranked, tsize, generator)
        children.append(crossover(parent1, parent2, generator))
    return elites + [mutate(child, mutate_rate, generator) for child in children]


def count_distinct(population: Sequence[Individual], genotype: Callable = derive_genotype) -> int:
    """How many different architectures (`genotype(alphas)`: the decoded genotypes) the population holds."""
    return len({str(genotype(ind.alphas)) for ind in population})
