"""What a search trains on and how it measures fitness, asserted directly and on any CPU and torch version (not
by comparison with a recorded run): which images train the supernet and which measure fitness, BatchNorm's mode
and the augmentation of the fitness images in each space, and that each individual's fitness is measured with
its own decoded architecture and reported as its own.

A search runs on images that carry their identity through the augmentation: image i is constant i + 1 in its
red channel (so the crop's zero padding shows as 0), rises left to right in its green one (so a flip shows as a
falling row), and its centre pixel survives every crop of the original's 4-pixel padding. A spy on the
supernet's forward records, for every call, the images, the gradient and BatchNorm mode, the architecture
weights in force and the logits.
"""
import json
import math
import os
from dataclasses import dataclass
from typing import List

import pytest
import torch
import torch.nn as nn

import model_search
import model_search_nb201
import search_space
import train_search
from architect_evolution import Individual
from engine import Monitor, evaluate_population
from inputs.data import ImageArray
from inputs.loaders import TensorLoader
from search_space import DARTS, NB201

NUM_IMAGES, CENTRE, SIZE = 96, 16, 32
SPLIT = NUM_IMAGES // 2  # the default --train_portion 0.5
POP_SIZE, GENERATIONS, VALID_BATCH = 3, 2, 20
TINY = ['--dataset', 'synthetic', '--synthetic_size', str(NUM_IMAGES), '--init_channels', '4', '--pop_size',
        str(POP_SIZE), '--tsize', '2', '--batch_size', '16', '--valid_batch_size', str(VALID_BATCH), '--epochs',
        str(GENERATIONS), '--device', 'cpu', '--report_freq', '50']
SPACES = {'darts': (DARTS, model_search.Network, ['--layers', '3']),
          'nb201': (NB201, model_search_nb201.Network, ['--space', 'nb201', '--num_cells', '1'])}


def labelled_images() -> ImageArray:
    """Image i (0-based): red = i + 1 everywhere, green = 8 + 7 * column, blue = 128; label i mod 10; mean 0 and
    std 1, so that a normalised pixel times 255 is its raw value."""
    images = torch.empty(NUM_IMAGES, 3, SIZE, SIZE, dtype=torch.uint8)
    images[:, 0] = torch.arange(1, NUM_IMAGES + 1, dtype=torch.uint8).view(-1, 1, 1)
    images[:, 1] = (8 + 7 * torch.arange(SIZE)).to(torch.uint8).view(1, 1, -1)
    images[:, 2] = 128
    return ImageArray(images, torch.arange(NUM_IMAGES) % 10, 10, (0., 0., 0.), (1., 1., 1.))


@dataclass
class Call:
    """One forward of the supernet."""
    grad: bool                 # under autograd (a training step) or not (fitness)
    training: bool             # BatchNorm in train mode
    ids: List[int]             # which image (0-based) each sample is
    padded: List[bool]         # the sample shows the crop's zero padding
    flipped: List[bool]        # the sample is mirrored
    alphas: List[torch.Tensor]
    logits: torch.Tensor


def spy_on(monkeypatch, network) -> List[Call]:
    calls = []
    forward = network.forward

    def spied(net, x):
        logits = forward(net, x)
        raw = (x.detach().float() * 255).round()
        calls.append(Call(torch.is_grad_enabled(), net.training, (raw[:, 0, CENTRE, CENTRE] - 1).long().tolist(),
                          (raw[:, 0] == 0).flatten(1).any(1).tolist(),
                          (raw[:, 1, CENTRE, CENTRE + 1] < raw[:, 1, CENTRE, CENTRE]).tolist(),
                          [a.detach().clone() for a in net.arch_parameters()], logits.detach().clone()))
        return logits

    monkeypatch.setattr(network, 'forward', spied)
    return calls


def run_search(space_name: str, run_dir: str, monkeypatch):
    """A tiny search on labelled_images() with the spy on: (the calls, the generation records)."""
    space, network, flags = SPACES[space_name]
    monkeypatch.setattr(search_space, 'load_dataset', lambda *args, **kwargs: labelled_images())
    calls = spy_on(monkeypatch, network)
    train_search.main(train_search.parse_args(TINY + flags + ['--run_dir', run_dir]))
    records = [json.load(open(os.path.join(run_dir, 'generations', f'gen_{g:03d}.json')))
               for g in range(1, GENERATIONS + 1)]
    monkeypatch.undo()
    return calls, records


@pytest.fixture(scope='module', params=list(SPACES))
def spied_search(request, tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        calls, records = run_search(request.param, str(tmp_path_factory.mktemp(request.param) / 'run'), monkeypatch)
    return SPACES[request.param][0], calls, records


def per_generation(calls: List[Call]):
    """[(training calls, fitness calls)] of each generation, in order."""
    generations, current = [], None
    for call in calls:
        if call.grad and (current is None or current[1]):
            current = ([], [])
            generations.append(current)
        current[0 if call.grad else 1].append(call)
    return generations


class TestSearchData:
    def test_the_darts_split_is_the_first_portion_then_the_rest_in_the_originals_order(self, monkeypatch):
        # The original: indices = range(N); train on indices[:floor(0.5 N)], fitness on indices[floor(0.5 N):].
        monkeypatch.setattr(search_space, 'load_dataset', lambda *args, **kwargs: labelled_images())
        for portion, split in ((0.5, SPLIT), (0.3, 28), (0.75, 72)):
            settings = train_search.search_settings(train_search.parse_args(TINY + ['--train_portion', str(portion)]))
            data = DARTS.search_data(settings.data, settings.augment)
            assert data.train is data.valid
            assert torch.equal(data.train_indices, torch.arange(split))
            assert torch.equal(data.valid_indices, torch.arange(split, NUM_IMAGES))

    def test_the_supernet_trains_on_the_first_half_once_per_generation(self, spied_search):
        space, calls, records = spied_search
        generations = per_generation(calls)
        assert len(generations) == GENERATIONS
        for training, _ in generations:
            assert all(call.training for call in training)
            ids = sorted(i for call in training for i in call.ids)
            assert ids == list(range(SPLIT)), 'every training image once, and no held-out one'
            # Both spaces train with the original's crop and flip.
            assert any(p for call in training for p in call.padded)
            assert any(f for call in training for f in call.flipped)

    def test_fitness_measures_every_individual_on_the_held_out_half(self, spied_search):
        space, calls, records = spied_search
        blocks = math.ceil((NUM_IMAGES - SPLIT) / VALID_BATCH)
        for _, fitness in per_generation(calls):
            assert len(fitness) == POP_SIZE * blocks
            for k in range(POP_SIZE):
                ids = sorted(i for call in fitness[k * blocks:(k + 1) * blocks] for i in call.ids)
                assert ids == list(range(SPLIT, NUM_IMAGES)), f"individual {k}: every held-out image once"

    def test_fitness_mode_and_augmentation_are_the_originals(self, spied_search):
        space, calls, records = spied_search
        fitness = [call for _, calls_of_generation in per_generation(calls) for call in calls_of_generation]
        padded = sum(p for call in fitness for p in call.padded)
        flipped = sum(f for call in fitness for f in call.flipped)
        if space is DARTS:
            # As the original: BatchNorm in train mode, on held-out images with the training augmentation.
            assert all(call.training for call in fitness)
            assert padded > 0 and flipped > 0
        else:
            # NOTE (faithful to EvNAS): NAS-Bench-201 measures in eval mode, on the test transform.
            assert not any(call.training for call in fitness)
            assert padded == 0 and flipped == 0

    def test_each_individual_is_measured_with_its_own_architecture_and_given_its_own_result(self, spied_search):
        space, calls, records = spied_search
        labels = labelled_images().labels
        blocks = math.ceil((NUM_IMAGES - SPLIT) / VALID_BATCH)
        distinct = set()
        for (_, fitness), record in zip(per_generation(calls), records):
            by_index = {entry['index']: entry for entry in record['population']}
            for k in range(POP_SIZE):
                entry = by_index[k]
                own = space.decode([torch.tensor(entry['alphas'][cell]) for cell in space.cells])
                mine = fitness[k * blocks:(k + 1) * blocks]
                for call in mine:
                    assert all(torch.equal(a, b) for a, b in zip(call.alphas, own, strict=True))
                logits = torch.cat([call.logits for call in mine])
                target = labels[[i for call in mine for i in call.ids]]
                top1 = 100. * (logits.argmax(1) == target).double().mean().item()
                loss = nn.functional.cross_entropy(logits, target).item()
                assert entry['fitness'] == pytest.approx(top1, abs=1e-9)
                assert entry['loss'] == pytest.approx(loss, rel=1e-5)
                distinct.add(round(loss, 4))
        assert len(distinct) > 1, 'the individuals must differ for this test to tell them apart'


class Readout(nn.Module):
    """A stand-in supernet whose output depends on nothing but its architecture weights: with the one-hot of
    individual i set, it classifies every image as class i."""

    def __init__(self, pop_size: int):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(5.))
        self.register_buffer('alphas', torch.zeros(pop_size), persistent=False)

    def set_arch_parameters(self, alphas):
        self.alphas.copy_(alphas[0])

    def forward(self, x):
        return (self.scale * self.alphas).expand(x.shape[0], -1)


class TestFitnessBelongsToItsIndividual:
    def test_with_a_supernet_whose_accuracy_is_set_by_the_alphas(self):
        # Class i holds i + 1 of the 15 images, so individual i (class i for every image) scores (i + 1) / 15.
        pop_size = 5
        labels = torch.cat([torch.full((i + 1,), i) for i in range(pop_size)])
        images = torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8)
        loader = TensorLoader(ImageArray(images, labels, pop_size, (0.,) * 3, (1.,) * 3), 4, shuffle=True,
                              generator=torch.Generator())
        population = [Individual([torch.zeros(pop_size)]) for _ in range(pop_size)]
        decoded = [[nn.functional.one_hot(torch.tensor(i), pop_size).float()] for i in range(pop_size)]
        evaluate_population(Readout(pop_size), population, decoded, loader, seeds=list(range(pop_size)),
                            monitor=Monitor(), generation=1)
        assert [ind.fitness for ind in population] == pytest.approx([100. * (i + 1) / 15 for i in range(pop_size)])
        losses = [ind.loss for ind in population]
        assert losses == sorted(losses, reverse=True) and len(set(losses)) == pop_size
