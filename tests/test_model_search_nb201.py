"""The NAS-Bench-201 space: its supernet against the original's state_dict, decoding and arch strings, and the
GA on its alphas."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

import train_search
import utils
from architect_evolution import Individual, evolve, init_population
from genotypes_nb201 import NB201_OPS, ArchError, arch_string, edge_names, parse_arch
from model_search_nb201 import Network, SearchCell
from nb201_files import ARCH, MANIFEST
from search_space import DARTS, NB201


class TestSupernet:
    @pytest.mark.parametrize('name', sorted(json.load(open(MANIFEST))))
    def test_state_dict_is_the_originals_and_loads_strictly(self, name):
        manifest = json.load(open(MANIFEST))[name]
        C, N, classes, track = name.split('_')  # e.g. C16_N5_classes10_track0
        model = Network(int(C[1:]), int(N[1:]), int(classes[7:]), track_running_stats=track == 'track1')
        assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == list(map(tuple, manifest.items()))
        original = {k: torch.full(shape, 0.5) if shape else torch.tensor(3) for k, shape in manifest.items()}
        model.load_state_dict(original, strict=True)
        assert 'alphas' not in model.state_dict() and model.arch_parameters()[0].shape == (6, 5)

    def test_forward_applies_softmax_to_the_decoded_alphas(self):
        """An edge's output is the sum of its five ops weighted e/(e+4) for the chosen one, 1/(e+4) for the others."""
        torch.manual_seed(0)
        cell = SearchCell(4, 4, track_running_stats=False).eval()
        alphas = torch.rand(6, 5)
        alphas[1] = torch.tensor([.9, .1, .2, .3, .4])  # `none` wins edge 2<-0
        (decoded,) = NB201.decode([alphas])
        weights = F.softmax(decoded, dim=-1)
        x = torch.randn(2, 4, 8, 8)
        nodes = [x]
        for i in range(1, 4):
            nodes.append(sum(sum(w * op(nodes[j]) for w, op in zip(weights[edge_names().index(f'{i}<-{j}')],
                                                                  cell.edges[f'{i}<-{j}']))
                             for j in range(i)))
        assert torch.allclose(cell(x, weights), nodes[-1], atol=1e-6)
        chosen, other = math.e / (math.e + 4), 1 / (math.e + 4)
        assert round(chosen, 3) == 0.405 and round(other, 3) == 0.149
        assert torch.allclose(weights.max(dim=1).values, torch.full((6,), chosen))
        assert torch.allclose(weights[1], torch.tensor([chosen, other, other, other, other]))

    def test_the_network_gives_every_cell_the_softmax_of_its_alphas(self):
        model = Network(4, 2, 10)
        alphas = NB201.decode([torch.rand(6, 5)])
        model.set_arch_parameters(alphas)
        received = []
        for cell in model.cells:
            if isinstance(cell, SearchCell):
                cell.register_forward_hook(lambda module, inputs, output: received.append(inputs[1]))
        model(torch.randn(2, 3, 16, 16))
        assert len(received) == 6
        for weights in received:
            assert torch.equal(weights, F.softmax(alphas[0], dim=-1))

    def test_network_runs_on_16_pixel_images_with_120_classes(self):
        model = Network(4, 1, 120, track_running_stats=True)
        model.set_arch_parameters(NB201.decode([torch.rand(6, 5)]))
        assert model(torch.randn(3, 3, 16, 16)).shape == (3, 120)


class TestDecoding:
    def test_one_hot_of_each_rows_argmax_none_included(self):
        alphas = torch.tensor([[.9, .1, .2, .3, .4], [.1, .2, .3, .4, .5], [.1, .8, .3, .4, .5],
                               [.1, .2, .7, .4, .5], [.1, .2, .3, .6, .5], [.5, .2, .3, .4, .1]])
        (decoded,) = NB201.decode([alphas])
        assert decoded.argmax(dim=1).tolist() == [0, 4, 1, 2, 3, 0] and decoded.sum().item() == 6
        assert NB201.genotype([alphas]) == \
            '|none~0|+|avg_pool_3x3~0|skip_connect~1|+|nor_conv_1x1~0|nor_conv_3x3~1|none~2|'
        # the DARTS space never keeps `none`; NAS-Bench-201 does
        assert 'none' not in str(DARTS.genotype([torch.eye(14, 8), torch.eye(14, 8)]))

    def test_arch_string_round_trip(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(50):
            ops = [NB201_OPS[i] for i in torch.randint(0, 5, (6,), generator=g).tolist()]
            assert parse_arch(arch_string(ops)) == ops
        assert arch_string(parse_arch(ARCH)) == ARCH
        assert parse_arch(ARCH) == ['nor_conv_3x3', 'none', 'skip_connect', 'avg_pool_3x3', 'nor_conv_1x1',
                                    'nor_conv_3x3']

    @pytest.mark.parametrize('bad', ['|nor_conv_3x3~0|+|none~0|', '|conv~0|', '|none~1|', 'nor_conv_3x3~0',
                                     '|none~0|+|none~0|none~1|none~2|'])
    def test_malformed_arch_strings_are_refused(self, bad):
        with pytest.raises(ArchError):
            parse_arch(bad)


class TestGeneticAlgorithm:
    def test_population_is_uniform_6_by_5(self):
        settings = train_search.search_settings(train_search.parse_args(['--space', 'nb201']))
        population = init_population(4, NB201.alpha_shapes(settings.supernet), utils.make_generator(3))
        g = utils.make_generator(3)
        for ind in population:
            assert len(ind.alphas) == 1 and torch.equal(ind.alphas[0], torch.rand(6, 5, generator=g))

    def test_evolve_is_the_dart_spaces_ga_on_one_matrix(self):
        """Tournament without replacement, uniform row crossover, row mutation with fresh U(0,1) rows, elites,
        drawn exactly as documented in architect_evolution.py."""
        population = init_population(6, [(6, 5)], utils.make_generator(1))
        for k, ind in enumerate(population):
            ind.fitness = [50., 70., 60., 10., 90., 30.][k]
        children = evolve(population, 1, 3, 0.3, utils.make_generator(7))

        g = utils.make_generator(7)
        ranked = sorted(population, key=lambda ind: -ind.fitness)
        expected = [ranked[0].alphas[0]]
        crossed = []
        while len(crossed) < 5:
            parents = [max((ranked[i] for i in torch.randperm(6, generator=g)[:3].tolist()), key=lambda p: p.fitness)
                       for _ in range(2)]
            first = torch.rand(6, generator=g) >= 0.5
            crossed.append(torch.where(first[:, None], parents[0].alphas[0], parents[1].alphas[0]))
        for child in crossed:
            hit = torch.rand(6, generator=g) < 0.3
            expected.append(torch.where(hit[:, None], torch.rand(6, 5, generator=g), child))
        assert len(children) == 6
        for got, want in zip(children, expected):
            assert torch.equal(got.alphas[0], want)
        assert isinstance(children[0], Individual) and math.isnan(children[0].fitness)


# ----------------------------------------------------------------------------------------------------------
# Data
