"""The fast settings compute what the paper-exact path computes (to float tolerance), and the batch-wise
augmentation draws from the same distributions as the per-image torchvision pipeline."""
import copy
import dataclasses
import statistics
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import genotypes
import operations
import speed
import utils
from architect_evolution import decode, random_individual
from conftest import ROOT
from data import (Augment, PerImageLoader, TensorLoader, apply_augment, augment_batch, draw_augment, make_synthetic,
                  pad_images)
from model import NetworkCIFAR
from model_search import MixedOp, Network
from operations import (BoxFilterAvgPool2d, Depthwise5x5Conv2d, DilConv, NarrowBatchNorm2d, SepConv, SeparableMaxPool2d,
                        depthwise_conv_weight_grad, dilated_conv_split_backward, phase_split_conv)

FAST = speed.SpeedConfig(fused_mixed_op=True, phase_split_dilated=True, channels_last=True, reuse_freed_memory=True,
                         narrow_batchnorm=True, separable_max_pool=True, box_filter_avg_pool=True,
                         depthwise5x5_from_3x3=True)


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


class TestPhaseSplitConv:
    @pytest.mark.parametrize('kernel, stride', [(3, 1), (5, 1), (3, 2), (5, 2)])
    @pytest.mark.parametrize('channels_last', [False, True])
    @pytest.mark.parametrize('split_conv', [phase_split_conv, dilated_conv_split_backward])
    def test_equals_the_dilated_conv_forward_and_backward(self, kernel, stride, channels_last, split_conv):
        torch.manual_seed(0)
        conv = nn.Conv2d(6, 6, kernel, stride, padding=kernel - 1, dilation=2, groups=6, bias=False)
        x = torch.randn(3, 6, 16, 16)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            conv = conv.to(memory_format=torch.channels_last)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        native, split = conv(x1), split_conv(x2, conv)
        assert split.shape == native.shape
        assert torch.allclose(split, native, atol=1e-5, rtol=1e-5)
        assert split.is_contiguous(memory_format=torch.channels_last) == channels_last
        g = torch.randn_like(native)
        wgrad_native = torch.autograd.grad(native, [x1, conv.weight], g)
        wgrad_split = torch.autograd.grad(split, [x2, conv.weight], g)
        for a, b in zip(wgrad_split, wgrad_native):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)

    @pytest.mark.parametrize('kernel, from_3x3', [(3, False), (5, False), (5, True)])
    @pytest.mark.parametrize('channels_last', [False, True])
    def test_split_backward_asks_only_for_the_gradients_needed(self, kernel, from_3x3, channels_last):
        # The input gradient is the flipped-kernel dilated conv of grad_y; the weight gradient comes from the
        # polyphase sub-images. Either may be asked for alone.
        torch.manual_seed(0)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        conv = nn.Conv2d(5, 5, kernel, 1, padding=kernel - 1, dilation=2, groups=5, bias=False, dtype=torch.float64)
        x = torch.randn(2, 5, 12, 12, dtype=torch.float64).contiguous(memory_format=fmt)
        g = torch.randn(2, 5, 12, 12, dtype=torch.float64).contiguous(memory_format=fmt)
        x1 = x.clone().requires_grad_()
        grad_x, = torch.autograd.grad(dilated_conv_split_backward(x1, conv, from_3x3), [x1], g)
        assert grad_x.is_contiguous(memory_format=fmt)
        expected_x, expected_w = torch.autograd.grad(conv(x1), [x1, conv.weight], g)
        torch.testing.assert_close(grad_x, expected_x, rtol=1e-12, atol=1e-12)
        grad_w, = torch.autograd.grad(dilated_conv_split_backward(x, conv, from_3x3), [conv.weight], g)  # x needs none
        torch.testing.assert_close(grad_w, expected_w, rtol=1e-12, atol=1e-12)

    def test_without_gradients_the_fast_dilconv_is_the_dilated_conv_itself(self):
        op = DilConv(4, 4, 5, 1, 4, 2)
        op.phase_split = True
        x = torch.randn(2, 4, 16, 16)
        with torch.no_grad():
            assert torch.equal(op(x), op.op(x))

    def test_dilconv_falls_back_below_8_pixels_and_for_odd_sizes(self):
        op = DilConv(4, 4, 3, 1, 2, 2)
        op.phase_split = True
        for size in (4, 17):
            x = torch.randn(2, 4, size, size)
            assert torch.equal(op(x), op.op(x))


class TestDepthwiseConvWeightGrad:
    @pytest.mark.parametrize('kernel, size, from_3x3', [(5, (4, 4), False), (5, (3, 3), False), (3, (4, 4), True),
                                                        (5, (8, 8), False), (5, (8, 8), True), (5, (32, 32), True),
                                                        (5, (6, 11), True), (5, (1, 2), True)])
    @pytest.mark.parametrize('memory_format', [torch.channels_last, torch.contiguous_format])
    def test_equals_atens_weight_gradient(self, kernel, size, from_3x3, memory_format):
        # 5x5 on images up to 4x4, or anywhere with from_3x3, takes the four-3x3 weight gradient; the rest is
        # ATen's own call. Odd, non-square and 1-pixel-high images too.
        torch.manual_seed(0)
        x = torch.randn(6, 5, *size, dtype=torch.float64).contiguous(memory_format=memory_format)
        weight = torch.randn(5, 1, kernel, kernel, dtype=torch.float64)
        grad_y = torch.randn_like(x)
        pad = kernel // 2
        expected = torch.ops.aten.convolution_backward(grad_y, x, weight, None, [1, 1], [pad, pad], [1, 1], False,
                                                       [0, 0], 5, [False, True, False])[1]
        got = depthwise_conv_weight_grad(grad_y, x, weight, pad, from_3x3)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


class TestDepthwise5x5Conv:
    def _pair(self, memory_format, dtype=torch.float64):
        torch.manual_seed(0)
        conv = nn.Conv2d(6, 6, 5, padding=2, groups=6, bias=False, dtype=dtype).to(memory_format=memory_format)
        fast = copy.deepcopy(conv)
        fast.__class__ = Depthwise5x5Conv2d
        return conv, fast

    @pytest.mark.parametrize('memory_format', [torch.channels_last, torch.contiguous_format])
    @pytest.mark.parametrize('size', [(16, 16), (5, 9)])
    def test_same_output_and_gradients_as_the_conv(self, memory_format, size):
        conv, fast = self._pair(memory_format)
        x = torch.randn(3, 6, *size, dtype=torch.float64).contiguous(memory_format=memory_format)
        g = torch.randn(3, 6, *size, dtype=torch.float64).contiguous(memory_format=memory_format)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y, y_fast = conv(x1), fast(x2)
        torch.testing.assert_close(y_fast, y, rtol=0, atol=1e-12)
        expected = torch.autograd.grad(y, [x1, conv.weight], g)
        got = torch.autograd.grad(y_fast, [x2, fast.weight], g)
        assert got[0].is_contiguous(memory_format=memory_format)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        # Either gradient alone: the input's with a frozen weight, the weight's for an input that needs none.
        fast.weight.requires_grad_(False)
        x3 = x.clone().requires_grad_()
        torch.testing.assert_close(torch.autograd.grad(fast(x3), [x3], g)[0], expected[0], rtol=0, atol=1e-12)
        fast.weight.requires_grad_(True)
        torch.testing.assert_close(torch.autograd.grad(fast(x), [fast.weight], g)[0], expected[1], rtol=0, atol=1e-12)

    def test_without_gradients_it_is_the_conv_bit_for_bit(self):
        conv, fast = self._pair(torch.channels_last, torch.float32)
        x = torch.randn(4, 6, 16, 16).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            assert torch.equal(fast(x), conv(x))

    def test_speed_apply_swaps_only_stride_1_depthwise_5x5_convs_and_back(self):
        model = nn.Sequential(SepConv(4, 4, 5, 1, 2), SepConv(4, 8, 5, 2, 2), SepConv(4, 4, 3, 1, 1),
                              DilConv(4, 4, 5, 1, 4, 2))
        state = copy.deepcopy(model.state_dict())
        speed.apply(model, FAST)
        swapped = [name for name, m in model.named_modules() if type(m) is Depthwise5x5Conv2d]
        assert swapped == ['0.op.1', '0.op.5', '1.op.5'], 'not the strided one, nor 3x3 or dilated convs'
        assert model[3].grad_from_3x3
        speed.apply(model, speed.PAPER_EXACT)
        assert not any(type(m) is Depthwise5x5Conv2d for m in model.modules()) and not model[3].grad_from_3x3
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), state.values()))
        assert list(model.state_dict()) == list(state)


class TestNarrowBatchNorm:
    # Rows of k pixels: 4 x 4 x 8 x 8 -> k = 16; 4 x 6 x 10 x 10 -> k = 10; 1 x 5 x 7 x 7 (49 pixels) -> k = 7;
    # 1 x 3 x 5 x 5 cannot make rows of 16 floats (k = 5) and runs ATen's kernel.
    @pytest.mark.parametrize('affine, momentum, shape', [(False, 0.1, (4, 6, 10, 10)), (True, 0.1, (4, 6, 10, 10)),
                                                         (True, None, (4, 6, 10, 10)), (True, 0.1, (4, 4, 8, 8)),
                                                         (False, 0.1, (1, 5, 7, 7)), (True, 0.1, (1, 3, 5, 5))])
    def test_same_outputs_gradients_and_running_statistics_as_batchnorm2d(self, affine, momentum, shape):
        torch.manual_seed(0)
        reference = nn.BatchNorm2d(shape[1], affine=affine, momentum=momentum).double()
        if affine:
            nn.init.uniform_(reference.weight)
            nn.init.uniform_(reference.bias)
        narrow = copy.deepcopy(reference)
        narrow.__class__ = NarrowBatchNorm2d
        for _ in range(3):  # running statistics and num_batches_tracked over several steps
            x = (3 * torch.randn(shape, dtype=torch.float64) + 1).contiguous(memory_format=torch.channels_last)
            x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
            y1, y2 = reference(x1), narrow(x2)
            assert y2.is_contiguous(memory_format=torch.channels_last)
            assert torch.allclose(y2, y1, rtol=0, atol=1e-12)
            g = torch.randn_like(y1)
            y1.backward(g)
            y2.backward(g)
            assert torch.allclose(x2.grad, x1.grad, rtol=0, atol=1e-12)
        for a, b in zip(narrow.parameters(), reference.parameters()):
            assert torch.allclose(a.grad, b.grad, rtol=0, atol=1e-10)
        for (name, a), b in zip(narrow.state_dict().items(), reference.state_dict().values()):
            assert torch.allclose(a.double(), b.double(), rtol=0, atol=1e-12), name

    def test_weight_gradient_alone_and_input_gradient_alone(self):
        torch.manual_seed(0)
        reference = nn.BatchNorm2d(4).double()
        nn.init.uniform_(reference.weight)
        narrow = copy.deepcopy(reference)
        narrow.__class__ = NarrowBatchNorm2d
        x = torch.randn(2, 4, 8, 8, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
        g = torch.randn_like(x)
        expected = torch.autograd.grad(reference(x), [reference.weight], g)[0]
        torch.testing.assert_close(torch.autograd.grad(narrow(x), [narrow.weight], g)[0], expected)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        narrow.weight.requires_grad_(False)
        narrow.bias.requires_grad_(False)
        torch.testing.assert_close(torch.autograd.grad(narrow(x2), [x2], g)[0],
                                   torch.autograd.grad(reference(x1), [x1], g)[0])

    def test_an_inplace_relu_may_follow(self):
        # The output is a new tensor, not a view of one made inside the autograd function (which autograd
        # forbids modifying in place); networks follow BatchNorm with ReLU(inplace=True).
        bn = NarrowBatchNorm2d(4)
        x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
        y = F.relu(bn(x), inplace=True)
        y.sum().backward()
        assert y.is_contiguous(memory_format=torch.channels_last) and x.grad.shape == x.shape

    def test_falls_back_in_eval_mode_and_for_nchw(self):
        torch.manual_seed(0)
        bn = nn.BatchNorm2d(4)
        bn.running_mean.uniform_()
        narrow = copy.deepcopy(bn)
        narrow.__class__ = NarrowBatchNorm2d
        x = torch.randn(2, 4, 6, 6)
        assert torch.equal(narrow.eval()(x), bn.eval()(x))
        assert torch.equal(narrow.train()(x), bn.train()(x))  # NCHW: ATen's own kernel, same bits

    def test_speed_apply_swaps_only_narrow_batchnorms_and_back(self):
        model = Network(4, 10, 5)  # 4, 8 and 16 channels in the cells, 12 in the stem
        before = {k: v.clone() for k, v in model.state_dict().items()}
        speed.apply(model, FAST)
        kinds = {(type(m), m.num_features) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
        assert kinds == {(NarrowBatchNorm2d, 4), (NarrowBatchNorm2d, 8), (NarrowBatchNorm2d, 12), (nn.BatchNorm2d, 16)}
        speed.apply(model, speed.PAPER_EXACT)
        assert {type(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {nn.BatchNorm2d}
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


class TestSeparableMaxPool:
    @pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
    @pytest.mark.parametrize('size', [32, 7, 1])
    def test_same_values_bit_for_bit_without_gradients(self, memory_format, size):
        torch.manual_seed(0)
        x = torch.randn(3, 5, size, size + 2).contiguous(memory_format=memory_format)
        x[0, 0, 0, :2] = 7.  # a tie
        pool = SeparableMaxPool2d(3, stride=1, padding=1)
        with torch.no_grad():
            out = pool(x)
        assert torch.equal(out, F.max_pool2d(x, 3, 1, 1))
        assert out.is_contiguous(memory_format=memory_format)

    def test_with_gradients_and_at_stride_2_it_is_atens_pool(self, monkeypatch):
        def not_here(x):
            raise AssertionError('the separable pool ran where ATen\'s should')
        monkeypatch.setattr(operations, 'separable_max_pool3x3', not_here)
        x = torch.randn(2, 3, 8, 8, requires_grad=True)
        out = SeparableMaxPool2d(3, stride=1, padding=1)(x)
        assert out.grad_fn.name() == 'MaxPool2DWithIndicesBackward0'
        with torch.no_grad():
            assert torch.equal(SeparableMaxPool2d(3, stride=2, padding=1)(x), F.max_pool2d(x, 3, 2, 1))
            with pytest.raises(AssertionError, match='separable pool ran'):  # the check itself can fail
                SeparableMaxPool2d(3, stride=1, padding=1)(x)


class TestBoxFilterAvgPool:
    @pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
    @pytest.mark.parametrize('size', [(16, 16), (17, 20)])
    def test_same_values_as_atens_pool_without_gradients(self, memory_format, size, monkeypatch):
        # Corners average 4 pixels, borders 6, the inside 9 (padding is not counted, as DARTS's avg_pool_3x3).
        torch.manual_seed(0)
        x = torch.randn(3, 5, *size, dtype=torch.float64).contiguous(memory_format=memory_format)
        expected = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        ran = []
        box_filter = operations.box_filter_avg_pool3x3
        monkeypatch.setattr(operations, 'box_filter_avg_pool3x3', lambda t: ran.append(1) or box_filter(t))
        with torch.no_grad():
            out = BoxFilterAvgPool2d(3, stride=1, padding=1, count_include_pad=False)(x)
        assert ran and out.is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        # The function itself also has the pool's gradient (it is only used without autograd).
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        g = torch.randn_like(expected)
        torch.testing.assert_close(torch.autograd.grad(box_filter(x2), x2, g)[0],
                                   torch.autograd.grad(F.avg_pool2d(x1, 3, 1, 1, count_include_pad=False), x1, g)[0],
                                   rtol=1e-12, atol=1e-12)

    def test_autograd_small_images_stride_2_and_counted_padding_are_atens_pool(self):
        z = torch.randn(2, 3, 16, 16, requires_grad=True)
        assert BoxFilterAvgPool2d(3, 1, 1, count_include_pad=False)(z).grad_fn.name() == 'AvgPool2DBackward0'
        x = torch.randn(2, 3, 8, 16, requires_grad=True)
        assert BoxFilterAvgPool2d(3, 1, 1, count_include_pad=False)(x).grad_fn.name() == 'AvgPool2DBackward0'
        y = torch.randn(2, 3, 16, 16, requires_grad=True)
        assert BoxFilterAvgPool2d(3, 2, 1, count_include_pad=False)(y).grad_fn.name() == 'AvgPool2DBackward0'
        assert BoxFilterAvgPool2d(3, 1, 1, count_include_pad=True)(y).grad_fn.name() == 'AvgPool2DBackward0'

    def test_speed_apply_swaps_avg_pools_and_back(self):
        model = Network(4, 10, 5)
        speed.apply(model, FAST)
        assert {type(m) for m in model.modules() if isinstance(m, nn.AvgPool2d)} == {BoxFilterAvgPool2d}
        speed.apply(model, speed.PAPER_EXACT)
        assert {type(m) for m in model.modules() if isinstance(m, nn.AvgPool2d)} == {nn.AvgPool2d}


class TestFusedMixedOp:
    @pytest.mark.parametrize('stride', [1, 2])
    def test_same_output_and_gradients_as_the_weighted_sum(self, stride):
        torch.manual_seed(0)
        exact = MixedOp(8, stride)
        fused = copy.deepcopy(exact)
        fused.fused = True
        weights = torch.softmax(torch.rand(8), 0)
        x = torch.randn(4, 8, 16, 16)
        out_exact, out_fused = exact(x, weights), fused(x, weights)
        assert torch.allclose(out_fused, out_exact, atol=1e-5)
        out_exact.square().sum().backward()
        out_fused.square().sum().backward()
        g_exact, g_fused = _grads(exact), _grads(fused)
        assert g_exact.keys() == g_fused.keys()
        for name in g_exact:
            assert torch.allclose(g_fused[name], g_exact[name], atol=1e-4, rtol=1e-3), name


class TestBatchNormMix:
    # (shape, layout): C=16 runs ATen's batch-norm kernels; C=8 and C=4 channels_last read rows of pixels.
    CASES = [((3, 16, 6, 6), torch.channels_last), ((3, 16, 6, 6), torch.contiguous_format),
             ((4, 8, 8, 8), torch.channels_last), ((2, 4, 10, 10), torch.channels_last)]

    @pytest.mark.parametrize('shape, layout', CASES)
    def test_same_sum_gradients_and_running_statistics_as_weighted_batchnorms(self, shape, layout):
        torch.manual_seed(0)
        n = 3
        reference = [nn.BatchNorm2d(shape[1], affine=False).double() for _ in range(n)]
        folded = copy.deepcopy(reference)
        for _ in range(2):  # running statistics over two steps
            zs = [(2 * torch.randn(shape, dtype=torch.float64) + i).contiguous(memory_format=layout) for i in range(n)]
            w = torch.softmax(torch.randn(n, dtype=torch.float64), 0)
            z1, z2 = [z.clone().requires_grad_() for z in zs], [z.clone().requires_grad_() for z in zs]
            w1, w2 = w.clone().requires_grad_(), w.clone().requires_grad_()
            out1 = sum(w1[i] * bn(z) for i, (z, bn) in enumerate(zip(z1, reference)))
            out2 = operations.batch_norm_mix(z2, w2, folded)
            torch.testing.assert_close(out2, out1, rtol=0, atol=1e-12)
            g = torch.randn_like(out1)
            out1.backward(g)
            out2.backward(g)
            for a, b in zip(z2, z1):
                torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)
            torch.testing.assert_close(w2.grad, w1.grad, rtol=0, atol=1e-10)
        for a, b in zip(folded, reference):
            for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
                torch.testing.assert_close(x, y, rtol=0, atol=1e-12, msg=name)

    def test_without_weight_gradients_and_with_an_inplace_add_after(self):
        # The supernet's weights are softmax(alphas) without gradient, and the edge adds skip_connect's term
        # to the sum in place.
        torch.manual_seed(1)
        bns = [nn.BatchNorm2d(8, affine=False).double() for _ in range(2)]
        zs = [torch.randn(2, 8, 4, 4, dtype=torch.float64, requires_grad=True) for _ in range(2)]
        x = torch.randn(2, 8, 4, 4, dtype=torch.float64, requires_grad=True)
        w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
        expected = torch.autograd.grad((w[0] * bns[0](zs[0]) + w[1] * bns[1](zs[1]) + w[2] * x).square().sum(),
                                       zs + [x])
        got = torch.autograd.grad(operations.batch_norm_mix(zs, w[:2], bns).addcmul_(x, w[2]).square().sum(), zs + [x])
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


class TestWholeNetworks:
    def _pair(self, dtype, init_channels=4):
        torch.manual_seed(0)
        exact = Network(init_channels, 10, 5).to(dtype)
        exact.set_arch_parameters(decode(random_individual(4, utils.make_generator(1)).alphas))
        fast = speed.apply(copy.deepcopy(exact), FAST)
        assert list(fast.state_dict()) == list(exact.state_dict()), 'keys unchanged'
        x, y = torch.randn(8, 3, 32, 32, dtype=dtype), torch.randint(0, 10, (8,))
        logits_exact, logits_fast = exact(x), fast(x.contiguous(memory_format=torch.channels_last))
        loss_exact, loss_fast = F.cross_entropy(logits_exact, y), F.cross_entropy(logits_fast, y)
        loss_exact.backward()
        loss_fast.backward()
        return (logits_exact, loss_exact, _grads(exact), exact.state_dict()), \
            (logits_fast, loss_fast, _grads(fast), fast.state_dict())

    def test_supernet_logits_loss_and_gradients_match_the_paper_exact_path(self):
        (logits_exact, loss_exact, g_exact, _), (logits_fast, loss_fast, g_fast, _) = self._pair(torch.float32)
        # Stated tolerance: 1e-4 absolute on logits and 1e-5 relative on the loss (float32, sums reordered).
        assert torch.allclose(logits_fast, logits_exact, atol=1e-4)
        assert loss_fast.item() == pytest.approx(loss_exact.item(), rel=1e-5)
        # Gradients within 2 % in norm per tensor. Not element by element in float32: a reordered sum can move a
        # ReLU input that lies within 1e-6 of zero to the other side (measured: one element in 32,768, which
        # changed the stem's weight gradient by 2e-3 of its norm). Element by element: the float64 test below.
        assert g_exact.keys() == g_fast.keys()
        for name in g_exact:
            assert (g_fast[name] - g_exact[name]).norm() <= 2e-2 * g_exact[name].norm(), name

    @pytest.mark.parametrize('init_channels', [4, 16])
    def test_in_float64_every_gradient_matches_element_by_element(self, init_channels):
        # The same computation: only the order of sums differs, so float64 agrees to about 1e-14 (measured).
        # C=4: narrow BatchNorms (rows of pixels); C=16: ATen's kernels, folded into the edges' sums.
        (logits_exact, loss_exact, g_exact, state_exact), (logits_fast, loss_fast, g_fast, state_fast) = self._pair(
            torch.float64, init_channels)
        assert torch.allclose(logits_fast, logits_exact, rtol=0, atol=1e-10)
        for name in g_exact:
            assert torch.allclose(g_fast[name], g_exact[name], rtol=0, atol=1e-10 * g_exact[name].abs().max()), name
        # The training step's folded BatchNorms update running statistics and batch counts as BatchNorm2d does.
        for (name, a), b in zip(state_fast.items(), state_exact.values()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=name)

    def test_supernet_fitness_forward_matches(self):
        torch.manual_seed(1)
        exact = Network(4, 10, 5)
        fast = speed.apply(copy.deepcopy(exact), FAST)
        x = torch.randn(16, 3, 32, 32)
        with torch.no_grad():
            assert torch.allclose(fast.train()(x.contiguous(memory_format=torch.channels_last)), exact.train()(x),
                                  atol=1e-4)

    @pytest.mark.parametrize('init_channels', [4, 16])
    def test_fitness_forward_in_float64_logits_and_running_statistics(self, init_channels):
        # Fitness folds each op's closing BatchNorm into its weighted add (MixedOp.fused_forward): the
        # logits and every BatchNorm's running statistics and batch count must still be those of the
        # paper-exact forward (C=4: narrow layers, read as rows of pixels; C=16: ATen's statistics).
        torch.manual_seed(3)
        exact = Network(init_channels, 10, 5).double().train()
        exact.set_arch_parameters(decode(random_individual(4, utils.make_generator(2)).alphas))
        fast = speed.apply(copy.deepcopy(exact), FAST)
        x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
        with torch.no_grad():
            for _ in range(2):
                logits_exact = exact(x)
                logits_fast = fast(x.contiguous(memory_format=torch.channels_last))
                torch.testing.assert_close(logits_fast, logits_exact, rtol=0, atol=1e-10)
        for (name, a), b in zip(fast.state_dict().items(), exact.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=name)

    def test_evaluation_network_with_dilated_convs_matches(self):
        torch.manual_seed(2)
        exact = NetworkCIFAR(8, 10, 5, True, genotypes.EvNASA).eval()
        fast = speed.apply(copy.deepcopy(exact), FAST)
        x = torch.randn(4, 3, 32, 32)
        with torch.no_grad():
            assert torch.allclose(fast(x)[0], exact(x)[0], atol=1e-4)

    def test_defaults_per_device(self, monkeypatch):
        monkeypatch.setattr(torch.backends.cpu, 'get_cpu_capability', lambda: 'AVX512')
        assert speed.default_config(torch.device('cpu')) == FAST
        # The 3x3-assembled 5x5 weight gradient was measured slower with AVX2 kernels at 32 channels and up.
        monkeypatch.setattr(torch.backends.cpu, 'get_cpu_capability', lambda: 'AVX2')
        assert speed.default_config(torch.device('cpu')) == dataclasses.replace(FAST, depthwise5x5_from_3x3=False)
        assert speed.default_config(torch.device('cuda')).channels_last
        assert speed.PAPER_EXACT.describe() == 'paper-exact (none)'
        assert not speed.default_config(torch.device('cuda')).reuse_freed_memory
        assert not speed.default_config(torch.device('cuda')).depthwise5x5_from_3x3


class TestAutocast:
    """--amp on CPU is bfloat16 autocast. The fast path's own conv functions then compute in the dtype autocast
    gave their conv; the folded BatchNorms take bfloat16 z with float32 statistics, as ATen's batch norm does
    on the paper-exact path."""

    @staticmethod
    def _step(net, x, y, amp: bool):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        return logits, loss, _grads(net)

    @pytest.mark.parametrize('init_channels', [4, 16])
    def test_training_step_and_fitness_under_bf16_autocast_match_the_paper_exact_path(self, init_channels):
        torch.manual_seed(0)
        base = Network(init_channels, 10, 5)
        base.set_arch_parameters(decode(random_individual(4, utils.make_generator(1)).alphas))
        exact, fast, reference = copy.deepcopy(base), speed.apply(copy.deepcopy(base), FAST), copy.deepcopy(base)
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
        x_last = x.contiguous(memory_format=torch.channels_last)
        logits_exact, loss_exact, g_exact = self._step(exact, x, y, True)
        logits_fast, loss_fast, g_fast = self._step(fast, x_last, y, True)
        _, _, g_fp32 = self._step(reference, x, y, False)
        assert logits_fast.dtype == logits_exact.dtype == torch.bfloat16
        # bfloat16 keeps 8 bits of mantissa: measured differences 0.011-0.012 on logits of about 0.6.
        torch.testing.assert_close(logits_fast.float(), logits_exact.float(), rtol=0, atol=5e-2)
        assert loss_fast.item() == pytest.approx(loss_exact.item(), rel=1e-2)
        # bfloat16 gradients lie about 17 % (median over tensors, in norm) from the float32 ones on either path,
        # so the fast path's are checked by their distance from float32: no farther than the paper-exact path's.
        assert g_fast.keys() == g_exact.keys() == g_fp32.keys()
        assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in g_fast.values())

        def median_error(grads):
            return statistics.median(((grads[n] - g_fp32[n]).norm() / g_fp32[n].norm()).item() for n in g_fp32)
        assert median_error(g_fast) <= 1.25 * median_error(g_exact)
        for (name, a), b in zip(fast.state_dict().items(), exact.state_dict().values()):
            assert a.dtype == b.dtype, name  # the running statistics stay float32
            torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=1e-2, msg=name)
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):  # fitness: no gradient, BN in train mode
            torch.testing.assert_close(fast(x_last).float(), exact(x).float(), rtol=0, atol=5e-2)


_FAULTS_SCRIPT = '''
import resource, sys, torch
sys.path.insert(0, sys.argv[1])
import speed

def mapped_afresh():
    """Allocate, fill and free a 64 MB tensor (16,384 pages of 4 KB); True when its pages had to be faulted in."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(16 * 2 ** 20)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before > 8192

default = sum(mapped_afresh() for _ in range(20))
changed = speed.keep_freed_memory()
print(changed, default, sum(mapped_afresh() for _ in range(20)))
'''


def test_reuse_freed_memory_stops_page_faults_for_repeated_large_tensors():
    # In a fresh process, because the setting is process-wide. With glibc's defaults every 64 MB block is
    # mapped afresh; once freed memory is kept, glibc settles on reusing it (measured: 1-7 of 20 blocks
    # still faulted in; in one 12-block run they were blocks 1 and 3-8, none after).
    done = subprocess.run([sys.executable, '-c', _FAULTS_SCRIPT, ROOT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    changed, default, kept = done.stdout.split()
    if changed != 'True':
        pytest.skip('C library without glibc mallopt')
    assert int(default) >= 18
    assert int(kept) <= 10


def _coordinate_image(size=32):
    """A uint8 image whose pixels encode their coordinates, so a crop or a flip shows in every pixel."""
    rows = torch.arange(size)[:, None].expand(size, size)
    cols = torch.arange(size)[None, :].expand(size, size)
    return torch.stack([rows * 7 + 20, cols * 7 + 20, (rows + cols) * 3 + 10]).to(torch.uint8)


class TestAugmentationDistributions:
    N = 3000

    def _per_image(self, cutout):
        image = _coordinate_image()
        array = make_synthetic(True, self.N)
        array.images[:] = image
        torch.manual_seed(0)  # the per-image transforms draw from the global stream
        loader = PerImageLoader(array, 500, augment=Augment(cutout_length=cutout), num_workers=0)
        return torch.cat([x for x, _ in loader]), array

    @pytest.mark.parametrize('cutout', [0, 16])
    def test_pixel_means_and_spreads_match_torchvision(self, cutout):
        reference, array = self._per_image(cutout)
        ours = augment_batch(array.images, array.mean, array.std, Augment(cutout_length=cutout),
                             utils.make_generator(3))
        # Each pixel's mean and standard deviation over 3000 augmented copies: the two pipelines differ only
        # by sampling noise (a few percent of the spread), never by a shifted or missing case.
        spread = reference.std(0).mean()
        assert (ours.mean(0) - reference.mean(0)).abs().mean() < 0.05 * spread
        assert (ours.std(0) - reference.std(0)).abs().mean() < 0.05 * spread
        # zero-padding shows as the normalised value of a 0 pixel; cutout as exact zeros
        padded = (-torch.tensor(array.mean) / torch.tensor(array.std)).view(3, 1, 1)
        frac = lambda t: (t == padded).all(1).float().mean().item()
        assert frac(ours) == pytest.approx(frac(reference), abs=0.01)
        if cutout:
            zeros = lambda t: (t == 0).all(1).float().mean().item()
            assert zeros(ours) == pytest.approx(zeros(reference), abs=0.01)
            assert zeros(ours) > 0.1

    @pytest.mark.parametrize('cutout', [0, 16, 9])
    @pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
    def test_each_image_equals_the_per_image_transforms_with_the_same_choices(self, cutout, memory_format):
        # The same crop offset, flip and cutout centre applied image by image with torchvision's functional
        # transforms and EvNAS's Cutout box (clipped at the border) give the batch-wise result to float rounding.
        import torchvision.transforms.functional as TF
        array = make_synthetic(True, 64)
        mean, std = array.mean, array.std
        augment = Augment(cutout_length=cutout)
        params = draw_augment(64, 32, 32, augment, utils.make_generator(7))
        if cutout:  # boxes clipped at every border
            params['cy'][:4], params['cx'][:4] = torch.tensor([0, 31, 5, 20]), torch.tensor([31, 0, 20, 5])
        ours = apply_augment(pad_images(array.images, 4), 32, 32, params, mean, std, augment, memory_format)
        assert ours.is_contiguous(memory_format=memory_format)
        for b in range(64):
            img = TF.to_pil_image(array.images[b])
            img = TF.crop(TF.pad(img, 4), int(params['dy'][b]), int(params['dx'][b]), 32, 32)
            if params['flip'][b]:
                img = TF.hflip(img)
            x = TF.normalize(TF.to_tensor(img), mean, std)
            if cutout:
                y, xc, half = int(params['cy'][b]), int(params['cx'][b]), cutout // 2
                x[:, max(y - half, 0):min(y + half, 32), max(xc - half, 0):min(xc + half, 32)] = 0.
            assert torch.allclose(ours[b], x, atol=1e-5), b

    def test_crop_offsets_and_flips_are_uniform(self):
        image = _coordinate_image()[None].expand(4000, 3, 32, 32)
        out = augment_batch(image, (0., 0., 0.), (1 / 255, 1 / 255, 1 / 255), Augment(), utils.make_generator(4))
        # pixel (16, 16) reads row 16 + dy - 4; its column says whether the image was flipped
        rows = ((out[:, 0, 16, 16] - 20) / 7).round() - 16 + 4
        assert set(rows.long().tolist()) == set(range(9))
        counts = torch.bincount(rows.long(), minlength=9).float() / len(rows)
        assert (counts - 1 / 9).abs().max() < 0.03
        cols_left = ((out[:, 1, 16, 0] - 20) / 7).round()
        cols_right = ((out[:, 1, 16, 31] - 20) / 7).round()
        flipped = (cols_left > cols_right).float().mean().item()
        assert flipped == pytest.approx(0.5, abs=0.04)

    def test_same_generator_state_same_batches(self):
        array = make_synthetic(True, 100)
        a = [x for x, _ in TensorLoader(array, 32, shuffle=True, augment=Augment(cutout_length=16),
                                        generator=utils.make_generator(5))]
        b = [x for x, _ in TensorLoader(array, 32, shuffle=True, augment=Augment(cutout_length=16),
                                        generator=utils.make_generator(5))]
        assert all(torch.equal(p, q) for p, q in zip(a, b))

    def test_shards_of_two_ranks_make_up_the_single_process_batch(self):
        array = make_synthetic(True, 50)
        make = lambda rank, world: list(TensorLoader(array, 16, shuffle=True, augment=Augment(cutout_length=8),
                                                     generator=utils.make_generator(6), rank=rank, world_size=world))
        single, r0, r1 = make(0, 1), make(0, 2), make(1, 2)
        assert len(single) == len(r0) == len(r1) == 4
        for (x, y), (x0, y0), (x1, y1) in zip(single, r0, r1):
            assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_generated_dataset_is_deterministic_and_learnable_shaped():
    a, b = make_synthetic(True, 64, seed=0), make_synthetic(True, 64, seed=0)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (64, 3, 32, 32) and a.images.dtype == torch.uint8
    assert not torch.equal(make_synthetic(False, 64).images, a.images)
