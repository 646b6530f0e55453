import math

import pytest
import torch

from architect_evolution import darts_shapes, decode, derive_genotype, random_individual
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

    def test_forward_weighs_a_decoded_individual_as_evnas(self, net):
        # NOTE (faithful to EvNAS): the supernet applies softmax to the one-hot decoded alphas, so a kept edge's
        # op weighs e/(e+7) = 0.280 and its siblings 1/(e+7) = 0.103, and an edge that is not kept 0.125 each.
        # Read here as the weights every MixedOp of Network.forward actually receives.
        individual = random_individual(darts_shapes(4), torch.Generator().manual_seed(5))
        decoded = decode(individual.alphas)
        net.set_arch_parameters(decoded)
        received = {}

        def record(key):
            def hook(module, args):
                received[key] = args[1].clone()  # returns None: the forward runs on its own arguments
            return hook
        for c, cell in enumerate(net.cells):
            for e, mixed in enumerate(cell._ops):
                mixed.register_forward_pre_hook(record((c, e)))
        net(torch.randn(2, 3, 16, 16))
        assert len(received) == 5 * 14
        for (c, e), weights in received.items():
            one_hot = decoded[1 if net.cells[c].reduction else 0][e]
            if one_hot.sum() == 1:
                expected = torch.where(one_hot.bool(), math.e / (math.e + 7), 1 / (math.e + 7))
                assert weights[one_hot.argmax()].item() == pytest.approx(0.280, abs=5e-4)
            else:
                expected = torch.full((8,), 0.125)
            torch.testing.assert_close(weights, expected, rtol=0, atol=1e-6)

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
    def test_two_strongest_non_none_inputs_per_node(self):
        alphas = torch.zeros(14, 8)
        alphas[0, 0] = 9.  # edge 0 -> node 0: 'none' strongest, best real op is sep_conv_3x3 below
        alphas[0, 4] = 2.
        alphas[1, 3] = 3.  # skip_connect from input 1
        alphas[2:5, 1] = torch.tensor([1., 4., 2.])  # node 1 takes inputs 1 then 2
        genotype = derive_genotype([alphas, alphas])
        assert genotype.normal[:4] == [('skip_connect', 1), ('sep_conv_3x3', 0),
                                       ('max_pool_3x3', 1), ('max_pool_3x3', 2)]
        assert genotype.normal_concat == [2, 3, 4, 5] and len(genotype.reduce) == 8

    def test_decoded_alphas_give_the_same_cells(self):
        g = torch.Generator().manual_seed(3)
        alphas = [torch.rand(14, 8, generator=g), torch.rand(14, 8, generator=g)]
        raw, decoded = derive_genotype(alphas), derive_genotype(decode(alphas))
        # Both kept edges of a node weigh 0.280 once decoded, so they tie and come in input order; the edges
        # themselves are the same.
        for cell in ('normal', 'reduce'):
            for node in range(4):
                pairs = slice(2 * node, 2 * node + 2)
                assert sorted(getattr(decoded, cell)[pairs]) == sorted(getattr(raw, cell)[pairs])
