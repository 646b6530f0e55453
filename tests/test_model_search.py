import math

import pytest
import torch

from architect_evolution import decode
from genotypes import PRIMITIVES
from model_search import Network


@pytest.fixture
def net():
    return Network(4, 10, 5)


class TestArchitectureWeights:
    def test_not_in_state_dict_but_move_with_the_module(self, net):
        assert not any('alphas' in k for k in net.state_dict())
        assert [a.shape for a in net.arch_parameters()] == [(14, 8), (14, 8)]
        net.to(torch.float64)
        assert all(a.dtype == torch.float64 for a in net.arch_parameters())
        net.to('meta')
        assert all(a.device.type == 'meta' for a in net.arch_parameters())

    def test_set_arch_parameters_copies(self, net):
        new = [torch.rand(14, 8), torch.rand(14, 8)]
        net.set_arch_parameters(new)
        assert all(torch.equal(a, b) for a, b in zip(net.arch_parameters(), new))
        new[0].zero_()
        assert not torch.equal(net.alphas_normal, new[0])

    def test_softmax_of_one_hot_rows(self, net):
        one_hot = torch.zeros(14, 8)
        one_hot[0, 4] = 1.
        net.set_arch_parameters([one_hot, one_hot])
        weights = torch.softmax(net.alphas_normal, dim=-1)
        assert weights[0, 4].item() == pytest.approx(math.e / (math.e + 7), abs=1e-6)
        assert weights[0, 4].item() == pytest.approx(0.280, abs=5e-4)
        assert weights[0, 0].item() == pytest.approx(0.103, abs=5e-4)
        assert torch.allclose(weights[1], torch.full((8,), 0.125))

    def test_forward_uses_softmax_of_alphas(self, net):
        net.eval()
        x = torch.randn(2, 3, 16, 16)
        net.set_arch_parameters([torch.zeros(14, 8), torch.zeros(14, 8)])
        uniform = net(x)
        net.set_arch_parameters([torch.full((14, 8), 5.), torch.full((14, 8), 5.)])
        assert torch.allclose(uniform, net(x), atol=1e-6), 'adding a constant to a row must not change softmax'

    def test_mixed_op_has_every_primitive_with_bn_after_pools(self, net):
        mixed = net.cells[0]._ops[0]
        assert len(mixed._ops) == len(PRIMITIVES)
        pool = mixed._ops[PRIMITIVES.index('max_pool_3x3')]
        assert type(pool[1]).__name__ == 'BatchNorm2d' and not pool[1].affine


class TestGenotypeRule:
    def test_two_strongest_non_none_inputs_per_node(self, net):
        alphas = torch.zeros(14, 8)
        alphas[0, 0] = 9.  # edge 0 -> node 0: 'none' strongest, best real op is sep_conv_3x3 below
        alphas[0, 4] = 2.
        alphas[1, 3] = 3.  # skip_connect from input 1
        alphas[2:5, 1] = torch.tensor([1., 4., 2.])  # node 1 takes inputs 1 then 2
        net.set_arch_parameters([alphas, alphas])
        genotype = net.genotype()
        assert genotype.normal[:4] == [('skip_connect', 1), ('sep_conv_3x3', 0),
                                       ('max_pool_3x3', 1), ('max_pool_3x3', 2)]
        assert genotype.normal_concat == [2, 3, 4, 5] and len(genotype.reduce) == 8

    def test_decoded_alphas_give_the_same_cells(self, net):
        g = torch.Generator().manual_seed(3)
        alphas = [torch.rand(14, 8, generator=g), torch.rand(14, 8, generator=g)]
        net.set_arch_parameters(alphas)
        raw = net.genotype()
        net.set_arch_parameters(decode(alphas))
        decoded = net.genotype()
        # Both kept edges of a node weigh 0.280 once decoded, so they tie and come in input order; the edges
        # themselves are the same.
        for cell in ('normal', 'reduce'):
            for node in range(4):
                pairs = slice(2 * node, 2 * node + 2)
                assert sorted(getattr(decoded, cell)[pairs]) == sorted(getattr(raw, cell)[pairs])
