"""Faster implementations of DARTS layers (mostly for CPUs), and one workaround of a PyTorch CPU bug.

Each class subclasses the torch.nn layer it replaces (or model_search.MixedOp), keeps its parameters and
state_dict, and computes the same function in another floating-point order, falling back to its parent's
forward wherever it does not apply. speed.layers(config) picks them when a network is built;
tests/test_kernels.py checks each against its parent. Which are on where, and what they earn:
docs/performance.md.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from genotypes import NONE_INDEX
from model_search import MixedOp
from operations import FactorizedReduce

Pair = Tuple[int, int]  # nn.Conv2d's kernel_size, stride, padding and dilation, as it stores them

# One 64-byte cache line of float32 accumulators: ATen's channels_last BatchNorm kernels make threads share
# lines below this many channels.
NARROW_CHANNELS = 16
# Strided 1x1 convs of fewer input channels crash oneDNN in channels_last (NCHWStridedConv2d).
ONEDNN_STRIDED_1X1_SAFE_CHANNELS = 16


def _layout(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is laid out (N, H, W, C) in memory (and not also plain contiguous)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


# ----------------------------------------------------------------------------------------------------------
# A oneDNN bug: strided 1x1 convs of few input channels in channels_last

class NCHWStridedConv2d(nn.Conv2d):
    """nn.Conv2d for the 1x1 stride-2 convs of fewer than ONEDNN_STRIDED_1X1_SAFE_CHANNELS input channels
    (FactorizedReduce's) of a channels_last network: on CPU, when a gradient is needed, it runs in NCHW and
    gives its output back in channels_last. In channels_last, oneDNN's weight gradient of such a conv corrupts
    memory: the process crashes, aborts or hangs (docs/performance.md says in which PyTorch). The same conv in
    NCHW is exact."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == 'cpu' and torch.is_grad_enabled():
            # Both operands NCHW: oneDNN takes channels_last if either is. clone, not contiguous(): a
            # channels_last 1x1 weight counts as contiguous and would keep its strides. The input is often a
            # strided view (FactorizedReduce's x[:, :, 1:, 1:]), which oneDNN also reads as channels_last.
            weight = self.weight.clone(memory_format=torch.contiguous_format)
            y = F.conv2d(x.contiguous(), weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            return y.contiguous(memory_format=torch.channels_last)
        return super().forward(x)


# ----------------------------------------------------------------------------------------------------------
# Dilated depthwise convs: the backward from the four polyphase sub-images

def _to_phases(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (4N, C, H/2, W/2): the four polyphase sub-images (even/odd rows x even/odd columns),
    phase-major, in the memory layout of x (channels_last stays channels_last, so nothing is converted). With
    dilation 2 and padding k - 1, a stride-1 depthwise conv of x is an undilated k x k conv of each sub-image."""
    N, C, H, W = x.shape
    if _layout(x) == torch.channels_last:
        phases = x.permute(0, 2, 3, 1).reshape(N, H // 2, 2, W // 2, 2, C).permute(2, 4, 0, 1, 3, 5)
        return phases.reshape(4 * N, H // 2, W // 2, C).permute(0, 3, 1, 2)
    return x.reshape(N, C, H // 2, 2, W // 2, 2).permute(3, 5, 0, 1, 2, 4).reshape(4 * N, C, H // 2, W // 2)


def _even_subimage_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A stride-2 dilation-2 depthwise conv with padding k - 1 as an undilated k x k conv of the even-rows,
    even-columns sub-image: each output pixel reads only input pixels of even parity, so the sums are the
    same, in another order. Needs even height and width."""
    return F.conv2d(x[:, :, ::2, ::2], conv.weight, conv.bias, 1, conv.kernel_size[0] // 2, 1, conv.groups)


def _as_computed(y: torch.Tensor, *tensors: torch.Tensor) -> List[torch.Tensor]:
    """The tensors in the dtype that computed y. Under autocast (--amp) a conv runs in bfloat16 (or float16)
    whatever its inputs' dtypes, and so must the backward a custom function computes from what it saved
    (autograd casts each returned gradient back to its input's dtype). A no-op in float32."""
    return [t.to(y.dtype) for t in tensors]


class _DilatedDepthwiseConv(torch.autograd.Function):
    """A stride-1 dilation-2 'same' depthwise conv without bias: ATen's forward (faster than the split's);
    backward, the input gradient as the dilated conv of grad_y with the flipped kernel (the transpose of a
    stride-1 'same' correlation) and the weight gradient from the polyphase sub-images (_depthwise_weight_grad)."""

    @staticmethod
    def forward(ctx, x, weight):
        y = F.conv2d(x, weight, None, 1, 2 * (weight.shape[-1] // 2), 2, weight.shape[0])
        ctx.save_for_backward(*_as_computed(y, x, weight))
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_y = grad_y.contiguous(memory_format=_layout(x))
        pad = weight.shape[-1] // 2
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad_y, weight.flip(-1, -2), None, 1, 2 * pad, 2, weight.shape[0])
        if ctx.needs_input_grad[1]:
            grad_weight = _depthwise_weight_grad(_to_phases(grad_y), _to_phases(x), weight, pad)
        return grad_x, grad_weight


def _depthwise_weight_grad(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, pad: int) -> torch.Tensor:
    """The weight gradient of a stride-1 'same' depthwise conv; a 5x5 kernel's on images up to 4 x 4 (the
    sub-images of an 8 x 8 dil_conv_5x5) from four 3x3 ones, where ATen's is slow on every CPU measured."""
    if weight.shape[-1] == 5 and pad == 2 and max(x.shape[-2:]) <= 4:
        return _depthwise_5x5_weight_grad(grad_y, x)
    return torch.ops.aten.convolution_backward(grad_y, x, weight, None, [1, 1], [pad, pad], [1, 1], False, [0, 0],
                                               weight.shape[0], [False, True, False])[1]


def _depthwise_5x5_weight_grad(grad_y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The weight gradient of a depthwise 5x5 conv with padding 2 (stride 1), from four 3x3 ones.

    grad_w[c, a, b] = sum over n, i, j of grad_y[n, c, i, j] * x_padded[n, c, i + a, j + b]: the 3x3 weight
    gradient of the unpadded conv over the window x_padded[a0 : a0 + H + 2, b0 : b0 + W + 2] gives the taps
    a0 .. a0 + 2, b0 .. b0 + 2. The four windows at a0, b0 in {0, 2} cover the 5x5 taps (row and column 2
    twice; those duplicates are dropped). Each window is x padded by 2 - a0 rows above and a0 below (columns
    alike). oneDNN has a depthwise kernel for the 3x3 weight gradient and runs the 5x5 one through its
    generic convolution (ONEDNN_VERBOSE=1 shows jit_dw against jit)."""
    C = x.shape[1]
    weight_3x3 = x.new_empty(C, 1, 3, 3)
    rows = []
    for a0 in (0, 2):
        pieces = [torch.ops.aten.convolution_backward(
            grad_y, F.pad(x, (2 - b0, b0, 2 - a0, a0)), weight_3x3, None, [1, 1], [0, 0], [1, 1], False, [0, 0], C,
            [False, True, False])[1] for b0 in (0, 2)]
        row = torch.cat([pieces[0], pieces[1][..., 1:]], dim=-1)
        rows.append(row if a0 == 0 else row[:, :, 1:])
    return torch.cat(rows, dim=-2)


class PhaseSplitDilatedConv2d(nn.Conv2d):
    """DilConv's dilation-2 depthwise conv (padding k - 1, no bias) with its gradients from undilated convs
    of polyphase sub-images. With autograd on even images of at least 8 x 8: stride 1 runs ATen's forward and
    _DilatedDepthwiseConv's backward, stride 2 the conv of the even sub-image (_even_subimage_conv). Elsewhere,
    and without gradients (fitness, testing), nn.Conv2d's forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad) and H % 2 == 0
                and W % 2 == 0 and min(H, W) >= 8):
            if self.stride == (2, 2):
                return _even_subimage_conv(x, self)
            return _DilatedDepthwiseConv.apply(x, self.weight)
        return super().forward(x)


def is_phase_splittable(in_channels: int, out_channels: int, kernel_size: Pair, stride: Pair, padding: Pair,
                        dilation: Pair, groups: int, bias: bool) -> bool:
    """Whether a conv with these nn.Conv2d arguments (pairs) is one PhaseSplitDilatedConv2d computes."""
    k = kernel_size[0]
    return (kernel_size == (k, k) and k in (3, 5) and dilation == (2, 2) and padding == (k - 1, k - 1)
            and stride in ((1, 1), (2, 2)) and groups == in_channels == out_channels and not bias)


# ----------------------------------------------------------------------------------------------------------
# Training-mode BatchNorm of narrow channels_last tensors, and BatchNorms folded into a weighted sum

def _widening(C: int, M: int) -> int:
    """How many neighbouring pixels of an (M pixels x C channels) channels_last tensor to read as one row:
    the largest k <= 64 / C that divides M, so that a row holds up to 64 floats (4 cache lines)."""
    return next(k for k in range(max(1, 64 // C), 0, -1) if M % k == 0)


def _narrow_rows(x: torch.Tensor) -> int:
    """k for reading a narrow channels_last x as rows of k pixels of at least 16 floats, where ATen's
    batch-norm reductions would share cache lines between threads; 0 where that does not apply."""
    C = x.shape[1]
    if x.dim() != 4 or C >= NARROW_CHANNELS or _layout(x) != torch.channels_last:
        return 0
    k = _widening(C, x.numel() // C)
    return k if k * C >= 16 else 0


def _count_batch(bn: nn.BatchNorm2d) -> float:
    """As nn.BatchNorm2d in training mode: count the batch, and return the momentum (1 / count when None)."""
    bn.num_batches_tracked.add_(1)
    return 1.0 / bn.num_batches_tracked.item() if bn.momentum is None else bn.momentum


def _rows(x: torch.Tensor, k: int) -> torch.Tensor:
    """A channels_last (N, C, H, W) tensor viewed (no copy) as (N*H*W / k, k*C): k pixels per row."""
    return x.permute(0, 2, 3, 1).reshape(-1, k * x.shape[1])


def _fold(per_column: torch.Tensor, k: int) -> torch.Tensor:
    """Sum the k column groups of a (k*C,) vector to (C,)."""
    return per_column.view(k, -1).sum(0)


def _batch_statistics(z: torch.Tensor, k: int, running_mean: torch.Tensor, running_var: torch.Tensor,
                      momentum: float):
    """Per-channel mean and biased variance of z, updating the running statistics as ATen's training-mode
    batch norm does: with k > 0 on rows of k pixels (the k columns of a channel combined: means and biased
    variances of equal counts, var = mean of the variances + variance of the means), else ATen's kernel."""
    if not k:
        return torch.batch_norm_update_stats(z, running_mean, running_var, momentum)
    rows = _rows(z, k)
    mean_k, var_k = torch.batch_norm_update_stats(rows, None, None, 0.0)  # per column; var biased
    mean = mean_k.view(k, -1).mean(0)
    var = var_k.view(k, -1).mean(0) + (mean_k.view(k, -1) - mean).square_().mean(0)
    count = rows.shape[0] * k
    with torch.no_grad():  # as ATen: running_var tracks the unbiased variance
        running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        running_var.mul_(1 - momentum).add_(var, alpha=momentum * count / max(count - 1, 1))
    return mean, var


def _batch_norm_backward(grad_y: torch.Tensor, x: torch.Tensor, weight, mean: torch.Tensor, invstd: torch.Tensor,
                         eps: float, k: int, input_grad: bool):
    """Training-mode batch norm's backward: (grad_x or None, sum(grad_y * x_hat), sum(grad_y)) per channel,
    for y = x_hat * weight + bias (weight None: 1). With k > 0, on rows of k pixels of a channels_last x."""
    if not k:
        return torch.ops.aten.native_batch_norm_backward(grad_y, x, weight, None, None, mean, invstd, True, eps,
                                                         [input_grad, True, True])
    count = x.numel() // x.shape[1]
    grad_y = grad_y.contiguous(memory_format=torch.channels_last)
    rows_x, rows_g = _rows(x, k), _rows(grad_y, k)
    # Per column: sum(grad_y * x_hat) and sum(grad_y), which are the weight and bias gradients of an
    # affine batch norm (weight None: no input gradient is asked for, so none is needed).
    _, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
        rows_g, rows_x, None, None, None, mean.repeat(k), invstd.repeat(k), True, eps, [False, True, True])
    sum_dy_xhat, sum_dy = _fold(sum_dy_xhat, k), _fold(sum_dy, k)
    grad_x = None
    if input_grad:
        # grad_x = a * (grad_y - sum_dy / M - x_hat * sum_dy_xhat / M), a = weight * invstd, written as
        # a * grad_y + b * x + c with per-channel b and c (two elementwise passes over rows).
        a = invstd if weight is None else weight * invstd
        b = -a * invstd * sum_dy_xhat / count
        c = -a * sum_dy / count - b * mean
        grad_x = add_per_channel(add_per_channel(None, x, b, c), grad_y, a)
    return grad_x, sum_dy_xhat, sum_dy


def add_per_channel(out: Optional[torch.Tensor], y: torch.Tensor = None, coefficient: torch.Tensor = None,
                    shift: torch.Tensor = None) -> torch.Tensor:
    """out += y * coefficient[c] + shift[c] per channel c, in place (y or shift may be None); with out None,
    a new tensor y * coefficient[c] + shift[c]. Channels_last tensors run on their rows of k pixels with the
    coefficients repeated k times: a long vectorised inner loop where a narrow (C, 1, 1) broadcast is slow."""
    like = out if out is not None else y
    tensors = [t for t in (out, y) if t is not None]
    if like.dim() == 4 and all(_layout(t) == torch.channels_last for t in tensors):
        k = _widening(like.shape[1], like.numel() // like.shape[1])
        view, repeat = (lambda t: _rows(t, k)), (lambda c: c.repeat(k))
    else:
        view, repeat = (lambda t: t), (lambda c: c.view(-1, *[1] * (like.dim() - 2)))
    if out is None:
        out = torch.empty_like(y)
        torch.addcmul(repeat(shift), view(y), repeat(coefficient), out=view(out))
        return out
    if y is not None:
        view(out).addcmul_(view(y), repeat(coefficient))
    if shift is not None:
        view(out).add_(repeat(shift))
    return out


class _WideBatchNorm(torch.autograd.Function):
    """Training-mode batch norm of a narrow channels_last CPU tensor, computed on a wider view of it.

    ATen's channels_last batch-norm kernels reduce over the N*H*W pixels with one accumulator row of C floats
    per thread, laid out side by side; when C floats are less than a 64-byte cache line the threads' rows
    share cache lines, which bounce between cores on every pixel. Read as rows of k pixels (k*C columns, no
    copy), the same memory gives every thread its own lines (_batch_statistics, _batch_norm_backward); the
    normalisation and the input gradient are elementwise with per-channel coefficients, repeated k times."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, k):
        mean, var = _batch_statistics(x, k, running_mean, running_var, momentum)
        invstd = (var + eps).rsqrt()
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.k, ctx.eps = k, eps
        scale = invstd if weight is None else weight * invstd
        shift = -mean * scale if bias is None else bias - mean * scale
        # A new tensor, not a view made here: autograd forbids in-place ops (an inplace ReLU) on such views.
        return add_per_channel(None, x, scale, shift)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, mean, invstd = ctx.saved_tensors
        grad_x, sum_dy_xhat, sum_dy = _batch_norm_backward(grad_y, x, weight, mean, invstd, ctx.eps, ctx.k,
                                                           ctx.needs_input_grad[0])
        grad_weight = sum_dy_xhat if ctx.needs_input_grad[1] else None
        grad_bias = sum_dy if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


class NarrowBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d of fewer than NARROW_CHANNELS channels that, in training mode on a channels_last CPU
    tensor, normalises as _WideBatchNorm (no false sharing between threads); everywhere else, and for shapes
    whose pixels cannot be grouped into rows of 16 floats or more, nn.BatchNorm2d's own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = _narrow_rows(x)
        if not (k and self.training and self.track_running_stats and x.device.type == 'cpu'
                and x.dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling()):
            return super().forward(x)
        self._check_input_dim(x)
        return _WideBatchNorm.apply(x, self.weight, self.bias, self.running_mean, self.running_var,
                                    _count_batch(self), self.eps, k)


def _rows_of(bn: nn.BatchNorm2d, z: torch.Tensor) -> int:
    """The rows of pixels a folded BatchNorm reads z in: NarrowBatchNorm2d's where bn is one, else none."""
    return _narrow_rows(z) if isinstance(bn, NarrowBatchNorm2d) else 0


def train_mode_affine(bn: nn.BatchNorm2d, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), per channel, such that bn(z) == z * scale + shift for a BatchNorm2d in training mode
    (to float rounding); like bn(z), it updates bn's running statistics and num_batches_tracked."""
    mean, var = _batch_statistics(z, _rows_of(bn, z), bn.running_mean, bn.running_var, _count_batch(bn))
    scale = (var + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    return scale, (shift if bn.bias is None else shift + bn.bias)


class _BatchNormMix(torch.autograd.Function):
    """sum_i w_i * bn_i(z_i) for training-mode BatchNorms without affine parameters, with autograd, never
    writing bn_i(z_i): w_i * bn_i(z_i) = z_i * (w_i * invstd_i) + w_i * shift_i per channel, so the sum is one
    multiply and n - 1 multiply-adds over the z_i, the n shifts added in the first. Backward: each z_i's
    gradient is bn_i's backward with w_i as its weight (one call, where the paper-exact path first multiplies
    the gradient by w_i in a pass of its own)."""

    @staticmethod
    def forward(ctx, weights, bns, momenta, *zs):
        ks = [_rows_of(bn, z) for z, bn in zip(zs, bns)]
        stats = [_batch_statistics(z, k, bn.running_mean, bn.running_var, momentum)
                 for z, k, bn, momentum in zip(zs, ks, bns, momenta)]
        invstds = [(var + bn.eps).rsqrt() for (_, var), bn in zip(stats, bns)]
        scales = [w * invstd for w, invstd in zip(weights, invstds)]
        shift = -sum(mean * scale for (mean, _), scale in zip(stats, scales))
        out = add_per_channel(None, zs[0], scales[0], shift)
        for z, scale in zip(zs[1:], scales[1:]):
            add_per_channel(out, z, scale)
        ctx.save_for_backward(weights, *zs, *(mean for mean, _ in stats), *invstds)
        ctx.ks, ctx.eps = ks, [bn.eps for bn in bns]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        n = len(ctx.ks)
        weights, zs, means, invstds = (ctx.saved_tensors[0], ctx.saved_tensors[1:n + 1],
                                       ctx.saved_tensors[n + 1:2 * n + 1], ctx.saved_tensors[2 * n + 1:])
        # Once, not in each of the n backward calls: the gradient arriving here is often a strided slice (of
        # the gradient of the cell's concatenated output).
        grad_out = grad_out.contiguous(memory_format=_layout(zs[0]))
        grad_zs, grad_weights = [], torch.zeros_like(weights) if ctx.needs_input_grad[0] else None
        for i, (z, mean, invstd, k, eps) in enumerate(zip(zs, means, invstds, ctx.ks, ctx.eps)):
            input_grad = ctx.needs_input_grad[3 + i]
            if not (input_grad or ctx.needs_input_grad[0]):
                grad_zs.append(None)
                continue
            gain = weights[i].expand(z.shape[1]).contiguous()  # bn_i's weight: w_i on every channel
            grad_z, sum_dy_xhat, _ = _batch_norm_backward(grad_out, z, gain, mean, invstd, eps, k, input_grad)
            grad_zs.append(grad_z)
            if grad_weights is not None:
                grad_weights[i] = sum_dy_xhat.sum()
        return (grad_weights, None, None, *grad_zs)


def batch_norm_mix(zs: Sequence[torch.Tensor], weights: torch.Tensor, bns: Sequence[nn.BatchNorm2d]) -> torch.Tensor:
    """sum_i weights[i] * bns[i](zs[i]), with autograd, for BatchNorm2d layers in training mode without affine
    parameters (the supernet's): see _BatchNormMix. Updates each bn's running statistics as bn(z) would."""
    assert all(bn.training and bn.track_running_stats and bn.weight is None for bn in bns)
    return _BatchNormMix.apply(weights, list(bns), [_count_batch(bn) for bn in bns], *zs)


# ----------------------------------------------------------------------------------------------------------
# The supernet's edge: one pass for the weighted sum

def _parts(op: nn.Module):
    """(rectified, layers, bn) such that op(x) == bn(layers(relu(x) if rectified else x)), bn None for an op
    without a closing BatchNorm, from the DARTS structure of the op: an nn.Sequential `op` that begins with a
    ReLU and ends with a BatchNorm (SepConv, DilConv, ReLUConvBN), FactorizedReduce, or a supernet pool (pool,
    BatchNorm)."""
    if isinstance(op, FactorizedReduce):
        return True, [op.reduce], op.bn
    seq = getattr(op, 'op', op)
    if isinstance(seq, nn.Sequential) and isinstance(seq[-1], nn.BatchNorm2d):
        rectified = isinstance(seq[0], nn.ReLU)
        return rectified, list(seq)[1 if rectified else 0:-1], seq[-1]
    return False, [op], None


class FusedMixedOp(MixedOp):
    """MixedOp's weighted sum with fewer passes over memory: `none` is skipped (it adds w * 0 = 0), the ops
    that begin with ReLU(x) share one ReLU, and the sum accumulates in place (one addcmul per op).

    On CPU with BatchNorm in training mode (the search's training step and fitness evaluation), each op's
    closing BatchNorm is folded into the sum: w * BN(z) = z * (w * scale) + w * shift per channel, so BN(z)
    is never written and read back. With autograd one function sums the folded ops (batch_norm_mix: their z
    are kept for the backward anyway); without, each op's z is added and freed as it comes. Running
    statistics are updated as BN(z) updates them."""

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        fold = self.folds(x)
        if fold and torch.is_grad_enabled():
            terms = list(self._terms(x, fold))
            folded = [(i, y, bn) for i, y, bn in terms if bn is not None]
            out = None
            if folded:
                index, zs, bns = zip(*folded)
                out = batch_norm_mix(zs, weights[list(index)], bns)
            for i, y, bn in terms:
                if bn is None:
                    out = y * weights[i] if out is None else out.addcmul_(y, weights[i])
            return out
        out = shift_left = None
        for i, y, bn in self._terms(x, fold):
            if bn is None:
                out = y * weights[i] if out is None else out.addcmul_(y, weights[i])
                continue
            scale, shift = train_mode_affine(bn, y)
            if out is None:  # the first term carries its shift; the others' are added once, at the end
                out = add_per_channel(None, y, weights[i] * scale, weights[i] * shift)
            else:
                out = add_per_channel(out, y, weights[i] * scale)
                shift_left = weights[i] * shift if shift_left is None else shift_left.add_(weights[i] * shift)
        return out if shift_left is None else add_per_channel(out, shift=shift_left)

    def folds(self, x: torch.Tensor) -> bool:
        """Whether the closing BatchNorms are folded: in training mode on CPU, the only device measured."""
        return self.training and x.device.type == 'cpu'

    def _terms(self, x, fold: bool):
        """(index, output, BatchNorm) of every op but `none`, in order, computed as they are asked for. With
        fold, an op that ends with a training-mode BatchNorm without affine parameters (the supernet's) stops
        before it and gives that BatchNorm (else None). The ops that begin with ReLU(x) share one."""
        relu_x = None
        for i, op in enumerate(self._ops):
            if i == NONE_INDEX:
                continue
            rectified, layers, bn = _parts(op)
            if rectified:
                relu_x = F.relu(x) if relu_x is None else relu_x
            y = relu_x if rectified else x
            for layer in layers:
                y = layer(y)
            if bn is not None and not (fold and bn.training and bn.track_running_stats and bn.weight is None):
                y, bn = bn(y), None
            yield i, y, bn


# ----------------------------------------------------------------------------------------------------------
# The stride-1 average pool without autograd (fitness, testing)

def box_filter_avg_pool3x3(x: torch.Tensor) -> torch.Tensor:
    """avg_pool_3x3 at stride 1 (padding 1, count_include_pad=False) as a depthwise conv with a kernel of ones
    (the 3x3 sums) times 1 / (the number of pixels each window covers inside the image). The same function;
    only rounding differs (a sum in another order, a multiply by 1/count against a divide)."""
    C, (H, W) = x.shape[1], x.shape[-2:]
    box = x.new_ones(C, 1, 3, 3)
    inside = F.conv2d(x.new_ones(1, 1, H, W), box[:1], None, 1, 1)  # 4, 6 or 9 pixels per window
    return F.conv2d(x, box, None, 1, 1, 1, C).mul_(inside.reciprocal_())  # in place: one tensor less at the peak


class BoxFilterAvgPool2d(nn.AvgPool2d):
    """nn.AvgPool2d that runs DARTS's stride-1 avg_pool_3x3 as box_filter_avg_pool3x3 on CPU for images of at
    least 16 x 16 where autograd does not need it (fitness evaluation, testing); oneDNN's depthwise conv beats
    ATen's pool there, and in whole training steps it did not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.kernel_size == 3 and self.stride == 1 and self.padding == 1 and not self.count_include_pad
                and not self.ceil_mode and self.divisor_override is None and x.dim() == 4
                and x.device.type == 'cpu' and min(x.shape[-2:]) >= 16 and not torch.compiler.is_compiling()
                and not (torch.is_grad_enabled() and x.requires_grad)):
            return box_filter_avg_pool3x3(x)
        return super().forward(x)
