"""Every class in speed/kernels.py against the torch.nn layer (or MixedOp) it replaces: same outputs, gradients and
running statistics to float rounding (float64 where the claim is 'the same sums in another order'), and its
own fallback wherever it does not apply."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from model_search import MixedOp
from operations import Layers
from speed import kernels
from speed.kernels import (
    BoxFilterAvgPool2d,
    FusedMixedOp,
    NarrowBatchNorm2d,
    NCHWStridedConv2d,
    PhaseSplitDilatedConv2d,
)


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _twin(cls, reference: nn.Module, *args, **kwargs) -> nn.Module:
    """A `cls` built with the reference's arguments, holding the reference's state."""
    twin = cls(*args, **kwargs).to(next(iter(reference.state_dict().values())).dtype)
    twin.load_state_dict(reference.state_dict())
    return twin


class TestPhaseSplitDilatedConv:
    @staticmethod
    def _pair(kernel, stride, memory_format, dtype=torch.float64, channels=6):
        torch.manual_seed(0)
        args = (channels, channels, kernel, stride)
        kwargs = dict(padding=kernel - 1, dilation=2, groups=channels, bias=False)
        conv = nn.Conv2d(*args, **kwargs).to(dtype).to(memory_format=memory_format)
        return conv, _twin(PhaseSplitDilatedConv2d, conv, *args, **kwargs).to(memory_format=memory_format)

    @pytest.mark.parametrize('kernel, stride', [(3, 1), (5, 1), (3, 2), (5, 2)])
    @pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
    @pytest.mark.parametrize('size', [16, 8])
    def test_same_output_and_gradients_as_the_dilated_conv(self, kernel, stride, memory_format, size):
        # 8 x 8: the 5x5 kernel's sub-images are 4 x 4, whose weight gradient comes from four 3x3 ones.
        conv, split = self._pair(kernel, stride, memory_format)
        x = torch.randn(3, 6, size, size, dtype=torch.float64).contiguous(memory_format=memory_format)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        native, fast = conv(x1), split(x2)
        torch.testing.assert_close(fast, native, rtol=0, atol=1e-12)
        assert fast.is_contiguous(memory_format=memory_format)
        g = torch.randn_like(native)
        expected = torch.autograd.grad(native, [x1, conv.weight], g)
        got = torch.autograd.grad(fast, [x2, split.weight], g)
        # The split ran: stride 1 through _DilatedDepthwiseConv, stride 2 as a conv of the even sub-image.
        ran = fast.grad_fn.name() if stride == 1 else fast.grad_fn.next_functions[0][0].name()
        assert ran == ('_DilatedDepthwiseConvBackward' if stride == 1 else 'SliceBackward0')
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)

    @pytest.mark.parametrize('kernel', [3, 5])
    @pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
    def test_either_gradient_alone(self, kernel, memory_format):
        conv, split = self._pair(kernel, 1, memory_format)
        x = torch.randn(2, 6, 12, 12, dtype=torch.float64).contiguous(memory_format=memory_format)
        g = torch.randn_like(x)
        x1 = x.clone().requires_grad_()
        expected_x, expected_w = torch.autograd.grad(conv(x1), [x1, conv.weight], g)
        grad_w, = torch.autograd.grad(split(x), [split.weight], g)  # an input that needs no gradient
        torch.testing.assert_close(grad_w, expected_w, rtol=0, atol=1e-12)
        split.weight.requires_grad_(False)
        grad_x, = torch.autograd.grad(split(x1), [x1], g)
        assert grad_x.is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(grad_x, expected_x, rtol=0, atol=1e-12)

    def test_without_gradients_small_or_odd_images_it_is_the_conv_itself(self):
        conv, split = self._pair(5, 1, torch.contiguous_format, torch.float32, channels=4)
        with torch.no_grad():
            x = torch.randn(2, 4, 16, 16)
            assert torch.equal(split(x), conv(x))
        for size in (4, 6, 17):
            x = torch.randn(2, 4, size, size, requires_grad=True)
            assert split(x).grad_fn.name() == conv(x).grad_fn.name()

    @pytest.mark.parametrize('size', [(4, 4), (3, 3), (1, 2)])
    @pytest.mark.parametrize('memory_format', [torch.channels_last, torch.contiguous_format])
    def test_5x5_weight_gradient_from_four_3x3_ones(self, size, memory_format):
        torch.manual_seed(0)
        x = torch.randn(6, 5, *size, dtype=torch.float64).contiguous(memory_format=memory_format)
        weight = torch.randn(5, 1, 5, 5, dtype=torch.float64)
        grad_y = torch.randn_like(x)
        expected = torch.ops.aten.convolution_backward(grad_y, x, weight, None, [1, 1], [2, 2], [1, 1], False,
                                                       [0, 0], 5, [False, True, False])[1]
        torch.testing.assert_close(kernels._depthwise_5x5_weight_grad(grad_y, x), expected, rtol=0, atol=1e-12)

    def test_only_dilconvs_depthwise_dilated_convs_qualify(self):
        ok = dict(in_channels=4, out_channels=4, kernel_size=(5, 5), stride=(1, 1), padding=(4, 4),
                  dilation=(2, 2), groups=4, bias=False)
        assert kernels.is_phase_splittable(**ok)
        assert kernels.is_phase_splittable(**{**ok, 'kernel_size': (3, 3), 'padding': (2, 2), 'stride': (2, 2)})
        for change in ({'dilation': (1, 1)}, {'padding': (2, 2)}, {'groups': 1}, {'bias': True},
                       {'kernel_size': (7, 7), 'padding': (6, 6)}, {'stride': (3, 3)}):
            assert not kernels.is_phase_splittable(**{**ok, **change}), change


class TestNCHWStridedConv:
    @pytest.mark.parametrize('shifted', [False, True])  # FactorizedReduce's conv_2 reads x[:, :, 1:, 1:]
    def test_same_output_and_gradients_back_in_channels_last(self, shifted):
        torch.manual_seed(0)
        conv = nn.Conv2d(4, 3, 1, stride=2, bias=False).double().to(memory_format=torch.channels_last)
        fast = _twin(NCHWStridedConv2d, conv, 4, 3, 1, stride=2, bias=False).to(memory_format=torch.channels_last)
        x = torch.randn(7, 4, 9, 9, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
        x = x[:, :, 1:, 1:] if shifted else x
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = conv(x1), fast(x2)
        assert y2.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y2, y1, rtol=0, atol=1e-12)
        g = torch.randn_like(y1)
        for a, b in zip(torch.autograd.grad(y2, [x2, fast.weight], g), torch.autograd.grad(y1, [x1, conv.weight], g)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        assert y2.grad_fn.next_functions[0][0].name() == 'ConvolutionBackward0', 'converted after an NCHW conv'
        assert y2.grad_fn.next_functions[0][0].next_functions[1][0].name() == 'CloneBackward0', 'an NCHW weight'
        with torch.no_grad():
            assert torch.equal(fast(x), conv(x)), 'without gradients it is the conv itself'


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
        narrow = _twin(NarrowBatchNorm2d, reference, shape[1], affine=affine, momentum=momentum)
        for _ in range(3):  # running statistics and num_batches_tracked over several steps
            x = (3 * torch.randn(shape, dtype=torch.float64) + 1).contiguous(memory_format=torch.channels_last)
            x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
            y1, y2 = reference(x1), narrow(x2)
            assert y2.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(y2, y1, rtol=0, atol=1e-12)
            g = torch.randn_like(y1)
            y1.backward(g)
            y2.backward(g)
            torch.testing.assert_close(x2.grad, x1.grad, rtol=0, atol=1e-12)
        for a, b in zip(narrow.parameters(), reference.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-10)
        for (name, a), b in zip(narrow.state_dict().items(), reference.state_dict().values()):
            torch.testing.assert_close(a.double(), b.double(), rtol=0, atol=1e-12, msg=name)

    def test_the_rows_of_pixels_ran(self, monkeypatch):
        ran = []
        forward = kernels._WideBatchNorm.forward
        monkeypatch.setattr(kernels._WideBatchNorm, 'forward', staticmethod(lambda *a: ran.append(1) or forward(*a)))
        NarrowBatchNorm2d(4)(torch.randn(4, 4, 8, 8).contiguous(memory_format=torch.channels_last))
        assert ran

    def test_weight_gradient_alone_and_input_gradient_alone(self):
        torch.manual_seed(0)
        reference = nn.BatchNorm2d(4).double()
        nn.init.uniform_(reference.weight)
        narrow = _twin(NarrowBatchNorm2d, reference, 4)
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
        narrow = _twin(NarrowBatchNorm2d, bn, 4)
        x = torch.randn(2, 4, 6, 6)
        assert torch.equal(narrow.eval()(x), bn.eval()(x))
        assert torch.equal(narrow.train()(x), bn.train()(x))  # NCHW: ATen's own kernel, same bits


class TestBatchNormMix:
    # (shape, layout, narrow): ATen's batch-norm kernels, or NarrowBatchNorm2d's rows of pixels.
    CASES = [((3, 16, 6, 6), torch.channels_last, False), ((3, 16, 6, 6), torch.contiguous_format, False),
             ((4, 8, 8, 8), torch.channels_last, True), ((2, 4, 10, 10), torch.channels_last, True),
             ((2, 4, 10, 10), torch.channels_last, False)]

    @pytest.mark.parametrize('shape, layout, narrow', CASES)
    def test_same_sum_gradients_and_running_statistics_as_weighted_batchnorms(self, shape, layout, narrow):
        torch.manual_seed(0)
        n = 3
        reference = [nn.BatchNorm2d(shape[1], affine=False).double() for _ in range(n)]
        folded = [_twin(NarrowBatchNorm2d if narrow else nn.BatchNorm2d, bn, shape[1], affine=False)
                  for bn in reference]
        for _ in range(2):  # running statistics over two steps
            zs = [(2 * torch.randn(shape, dtype=torch.float64) + i).contiguous(memory_format=layout) for i in range(n)]
            w = torch.softmax(torch.randn(n, dtype=torch.float64), 0)
            z1, z2 = [z.clone().requires_grad_() for z in zs], [z.clone().requires_grad_() for z in zs]
            w1, w2 = w.clone().requires_grad_(), w.clone().requires_grad_()
            out1 = sum(w1[i] * bn(z) for i, (z, bn) in enumerate(zip(z1, reference)))
            out2 = kernels.batch_norm_mix(z2, w2, folded)
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
        got = torch.autograd.grad(kernels.batch_norm_mix(zs, w[:2], bns).addcmul_(x, w[2]).square().sum(), zs + [x])
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


class TestFusedMixedOp:
    @staticmethod
    def _pair(stride, C=8, narrow=False):
        torch.manual_seed(0)
        exact = MixedOp(C, stride).double()
        fused = FusedMixedOp(C, stride, Layers(BatchNorm2d=NarrowBatchNorm2d) if narrow else Layers()).double()
        fused.load_state_dict(exact.state_dict())
        return exact, fused

    @pytest.mark.parametrize('stride', [1, 2])
    @pytest.mark.parametrize('grad', [True, False])
    @pytest.mark.parametrize('training', [True, False])
    @pytest.mark.parametrize('narrow', [False, True])
    def test_same_output_gradients_and_running_statistics_as_the_weighted_sum(self, stride, grad, training, narrow):
        # Training with autograd: the folded BatchNorms in one function; without (fitness): folded op by op
        # (narrow ones on rows of pixels); eval mode: no fold.
        exact, fused = self._pair(stride, narrow=narrow)
        exact.train(training), fused.train(training)
        x = torch.randn(4, 8, 16, 16, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
        self._assert_same(exact, fused, x, grad)

    @staticmethod
    def _assert_same(exact, fused, x, grad):
        """Outputs, gradients (with autograd) and BatchNorm running statistics of the two mixed ops agree."""
        weights = torch.softmax(torch.rand(8, dtype=torch.float64), 0)
        with torch.set_grad_enabled(grad):
            out_exact, out_fused = exact(x, weights), fused(x, weights)
        torch.testing.assert_close(out_fused, out_exact, rtol=0, atol=1e-12)
        if grad:
            out_exact.square().sum().backward()
            out_fused.square().sum().backward()
            g_exact, g_fused = _grads(exact), _grads(fused)
            assert g_exact.keys() == g_fused.keys() and g_exact
            for name in g_exact:
                torch.testing.assert_close(g_fused[name], g_exact[name], rtol=0,
                                           atol=1e-10 * g_exact[name].abs().max(), msg=name)
        for (name, a), b in zip(fused.state_dict().items(), exact.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)

    @pytest.mark.parametrize('grad', [True, False])
    def test_without_the_fold_in_training_mode_as_on_cuda(self, grad, monkeypatch):
        # The path CUDA takes (the fold was measured on CPU only): BatchNorms applied, then the in-place sum.
        exact, fused = self._pair(2)
        monkeypatch.setattr(FusedMixedOp, 'folds', lambda self, x: False)
        monkeypatch.setattr(kernels, 'batch_norm_mix', None)  # would fail if called
        self._assert_same(exact, fused, torch.randn(3, 8, 12, 12, dtype=torch.float64), grad)

    def test_none_is_skipped_and_one_relu_is_shared(self, monkeypatch):
        exact, fused = self._pair(1)
        calls = []
        relu = F.relu  # torch.nn.functional's, which nn.ReLU calls too
        monkeypatch.setattr(F, 'relu', lambda t, *a, **k: calls.append(1) or relu(t, *a, **k))
        zero_ran = []
        fused._ops[0].register_forward_hook(lambda *a: zero_ran.append(1))
        x, weights = torch.randn(2, 8, 8, 8, dtype=torch.float64), torch.softmax(torch.rand(8, dtype=torch.float64), 0)
        exact(x, weights)
        # sep_conv x 2 ReLUs, dil_conv x 1, twice each: 6; fused, one shared for the four plus the two inner ones.
        assert len(calls) == 6
        calls.clear()
        fused(x, weights)
        assert len(calls) == 3 and not zero_ran

    def test_the_closing_batchnorms_are_folded_in_training_mode_only(self, monkeypatch):
        _, fused = self._pair(1)
        folded, mixed = [], []
        affine, mix = kernels.train_mode_affine, kernels.batch_norm_mix
        monkeypatch.setattr(kernels, 'train_mode_affine', lambda bn, z: folded.append(bn) or affine(bn, z))
        monkeypatch.setattr(kernels, 'batch_norm_mix', lambda zs, w, bns: mixed.append(len(bns)) or mix(zs, w, bns))
        x, weights = torch.randn(2, 8, 8, 8, dtype=torch.float64), torch.softmax(torch.rand(8, dtype=torch.float64), 0)
        with torch.no_grad():
            fused(x, weights)
        assert len(folded) == 6 and not mixed, 'fitness: both pools, both sep_convs, both dil_convs, one by one'
        folded.clear()
        fused(x, weights)
        assert mixed == [6] and not folded, 'training step: the six in one function'
        fused.eval()(x, weights)
        assert mixed == [6] and not folded, 'eval mode: running statistics, no fold'

    def test_parts_of_the_darts_ops(self):
        _, fused = self._pair(2)
        parts = [kernels._parts(op) for op in fused._ops]
        # (starts with ReLU, ends with a BatchNorm) for none, max/avg pool + BN, skip (FactorizedReduce), sep, dil
        assert [(rectified, bn is not None) for rectified, _, bn in parts] == \
            [(False, False), (False, True), (False, True), (True, True), (True, True), (True, True), (True, True),
             (True, True)]


class TestBoxFilterAvgPool:
    @pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
    @pytest.mark.parametrize('size', [(16, 16), (17, 20)])
    def test_same_values_as_atens_pool_without_gradients(self, memory_format, size, monkeypatch):
        # Corners average 4 pixels, borders 6, the inside 9 (padding is not counted, as DARTS's avg_pool_3x3).
        torch.manual_seed(0)
        x = torch.randn(3, 5, *size, dtype=torch.float64).contiguous(memory_format=memory_format)
        expected = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        ran = []
        box_filter = kernels.box_filter_avg_pool3x3
        monkeypatch.setattr(kernels, 'box_filter_avg_pool3x3', lambda t: ran.append(1) or box_filter(t))
        with torch.no_grad():
            out = BoxFilterAvgPool2d(3, stride=1, padding=1, count_include_pad=False)(x)
        assert ran and out.is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)

    def test_autograd_small_images_stride_2_and_counted_padding_are_atens_pool(self):
        z = torch.randn(2, 3, 16, 16, requires_grad=True)
        assert BoxFilterAvgPool2d(3, 1, 1, count_include_pad=False)(z).grad_fn.name() == 'AvgPool2DBackward0'
        x = torch.randn(2, 3, 8, 16, requires_grad=True)
        assert BoxFilterAvgPool2d(3, 1, 1, count_include_pad=False)(x).grad_fn.name() == 'AvgPool2DBackward0'
        y = torch.randn(2, 3, 16, 16, requires_grad=True)
        assert BoxFilterAvgPool2d(3, 2, 1, count_include_pad=False)(y).grad_fn.name() == 'AvgPool2DBackward0'
        assert BoxFilterAvgPool2d(3, 1, 1, count_include_pad=True)(y).grad_fn.name() == 'AvgPool2DBackward0'
