"""The DARTS primitive operations (Liu et al., 2019), with DARTS's module names and nesting.

The state_dict keys of every network in this project come from the attribute names below
(`op`, `conv_1`, `conv_2`, `bn`): published checkpoints load only while they stay unchanged.

Ops that begin with a ReLU of their input also offer `forward_rectified(relu_x)`, everything after that
ReLU, so the supernet can compute the ReLU once for all the ops of an edge (see model_search.MixedOp).
"""
import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


class ReLUConvBN(nn.Module):
    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    """ReLU, dilated depthwise conv, pointwise conv, BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C_in,
                      bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )
        # Off: the conv runs as DARTS runs it. On (a speed setting, see speed.py): as phase_split_conv.
        self.phase_split = False
        # With phase_split, a 5x5 kernel's weight gradient from four 3x3 ones (speed setting depthwise5x5_from_3x3).
        self.grad_from_3x3 = False

    def forward(self, x):
        return self.forward_rectified(self.op[0](x))

    def forward_rectified(self, x, normalise: bool = True):
        """Everything after the ReLU; without the closing BatchNorm when normalise is False."""
        conv = self.op[1]
        # Below 8 x 8 the sub-images are too small for the split to pay (measured on CPU, forward and backward:
        # 2.8-4.7x faster than the dilated conv from 32 x 32 down to 8 x 8, except 5x5 at 8 x 8, about equal).
        if (self.phase_split and conv.dilation == (2, 2) and conv.padding == (conv.kernel_size[0] - 1,) * 2
                and conv.groups == conv.in_channels and conv.bias is None and x.shape[-1] % 2 == 0
                and x.shape[-2] % 2 == 0 and min(x.shape[-2:]) >= 8):
            x = dilated_conv_split_backward(x, conv, self.grad_from_3x3)
        else:
            x = conv(x)
        x = self.op[2](x)
        return self.op[3](x) if normalise else x


def _layout(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is laid out (N, H, W, C) in memory (and not also plain contiguous)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def _to_phases(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (4N, C, H/2, W/2): the four polyphase sub-images (even/odd rows x even/odd columns),
    phase-major, in the memory layout of x (channels_last stays channels_last, so nothing is converted)."""
    N, C, H, W = x.shape
    if _layout(x) == torch.channels_last:
        phases = x.permute(0, 2, 3, 1).reshape(N, H // 2, 2, W // 2, 2, C).permute(2, 4, 0, 1, 3, 5)
        return phases.reshape(4 * N, H // 2, W // 2, C).permute(0, 3, 1, 2)
    return x.reshape(N, C, H // 2, 2, W // 2, 2).permute(3, 5, 0, 1, 2, 4).reshape(4 * N, C, H // 2, W // 2)


def _from_phases(y: torch.Tensor) -> torch.Tensor:
    """The inverse of _to_phases."""
    N4, C, h, w = y.shape
    N = N4 // 4
    if _layout(y) == torch.channels_last:
        y = y.permute(0, 2, 3, 1).reshape(2, 2, N, h, w, C).permute(2, 3, 0, 4, 1, 5)
        return y.reshape(N, 2 * h, 2 * w, C).permute(0, 3, 1, 2)
    return y.reshape(2, 2, N, C, h, w).permute(2, 3, 4, 0, 5, 1).reshape(N, C, 2 * h, 2 * w)


def phase_split_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A dilation-2 depthwise conv computed as an undilated conv on the four polyphase sub-images.

    With dilation 2 and padding k - 1, output pixel (i, j) only reads input pixels of the same parity as
    (i, j) (stride 1), or of even parity (stride 2), so the conv is an ordinary k x k conv of each parity
    sub-image. The sums are the same; only their floating-point order differs. On CPUs this is several times
    faster than the dilated conv's backward pass (and slower than its forward). Needs even height and width.
    """
    pad = conv.kernel_size[0] // 2
    if conv.stride == (2, 2):
        return F.conv2d(x[:, :, ::2, ::2], conv.weight, conv.bias, 1, pad, 1, conv.groups)
    return _from_phases(F.conv2d(_to_phases(x), conv.weight, conv.bias, 1, pad, 1, conv.groups))


def _as_computed(y: torch.Tensor, *tensors: torch.Tensor):
    """The tensors in the dtype that computed y. Under autocast (--amp) a conv runs in bfloat16 (or float16)
    whatever its inputs' dtypes, and so must the backward a custom function computes from what it saved
    (autograd casts each returned gradient back to its input's dtype). A no-op in float32."""
    return [t.to(y.dtype) for t in tensors]


class _DepthwiseConvSame(torch.autograd.Function):
    """A stride-1 'same' depthwise conv without bias, of dilation 1 or 2: ATen's conv forward; backward, the
    input gradient as the conv of grad_y with the flipped kernel (the transpose of a stride-1 'same'
    correlation) and the weight gradient by depthwise_conv_weight_grad, for dilation 2 from the polyphase
    sub-images, as phase_split_conv's (with from_3x3, a 5x5 kernel's from four 3x3 ones). Measured on this
    project's 2-core CPU, channels_last, batch 64, dilation 2, the whole backward: 3x3 at 32 x 32 4.7 -> 3.0 ms,
    5x5 10.6 -> 9.1 ms, 5x5 at 8 x 8 5.6 -> 5.0 ms, against taking the input gradient from the sub-images too
    (which costs a transposed conv and a copy back from the phase layout); dilation 1, 5x5, the input gradient
    alone 0.33 -> 0.18 ms at 64 x 16 x 32 x 32 against ATen's."""

    @staticmethod
    def forward(ctx, x, weight, dilation, from_3x3):
        y = F.conv2d(x, weight, None, 1, dilation * (weight.shape[-1] // 2), dilation, weight.shape[0])
        ctx.save_for_backward(*_as_computed(y, x, weight))
        ctx.dilation, ctx.from_3x3 = dilation, from_3x3
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_y = grad_y.contiguous(memory_format=_layout(x))
        pad, dilation = weight.shape[-1] // 2, ctx.dilation
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad_y, weight.flip(-1, -2), None, 1, dilation * pad, dilation, weight.shape[0])
        if ctx.needs_input_grad[1]:
            if dilation == 2:
                grad_y, x = _to_phases(grad_y), _to_phases(x)
            grad_weight = depthwise_conv_weight_grad(grad_y, x, weight, pad, ctx.from_3x3)
        return grad_x, grad_weight, None, None


def depthwise_conv_weight_grad(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, pad: int,
                               from_3x3: bool = False) -> torch.Tensor:
    """The weight gradient of a stride-1 'same' depthwise conv.

    A 5x5 kernel's comes from four 3x3 ones (_depthwise_5x5_weight_grad) where from_3x3 asks for it, and always
    on images up to 4 x 4 (the phase-split sub-images of an 8 x 8 dil_conv_5x5), where ATen's CPU weight
    gradient of a 5x5 depthwise conv is slow on every CPU measured (256 x 64 x 4 x 4: 4.8 against 0.9 ms with
    AVX2 kernels, 0.56 against 0.38 ms with AVX-512; on an earlier AVX2 machine, 256 x 32 x 4 x 4, 7.2 against
    1.3 ms)."""
    if weight.shape[-1] == 5 and pad == 2 and (from_3x3 or max(x.shape[-2:]) <= 4):
        return _depthwise_5x5_weight_grad(grad_y, x)
    return torch.ops.aten.convolution_backward(grad_y, x, weight, None, [1, 1], [pad, pad], [1, 1], False, [0, 0],
                                               weight.shape[0], [False, True, False])[1]


def _depthwise_5x5_weight_grad(grad_y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The weight gradient of a depthwise 5x5 conv with padding 2 (stride 1), from four 3x3 ones.

    grad_w[c, a, b] = sum over n, i, j of grad_y[n, c, i, j] * x_padded[n, c, i + a, j + b]: the 3x3 weight
    gradient of the unpadded conv over the window x_padded[a0 : a0 + H + 2, b0 : b0 + W + 2] gives the taps
    a0 .. a0 + 2, b0 .. b0 + 2. The four windows at a0, b0 in {0, 2} cover the 5x5 taps (row and column 2
    twice; those duplicates are dropped). Each window is x padded by 2 - a0 rows above and a0 below (columns
    alike): one pass that writes it in x's layout. oneDNN has a depthwise kernel for the 3x3 weight gradient
    and runs the 5x5 one through its generic convolution (ONEDNN_VERBOSE=1 shows jit_dw against jit)."""
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


def is_depthwise_5x5(conv: nn.Conv2d) -> bool:
    """Whether conv is a stride-1 'same' depthwise 5x5 conv without bias (SepConv's 5x5 convs, but for the
    strided first one in a reduction cell)."""
    return (conv.kernel_size == (5, 5) and conv.stride == (1, 1) and conv.padding == (2, 2)
            and conv.dilation == (1, 1) and conv.groups == conv.in_channels == conv.out_channels
            and conv.bias is None and conv.padding_mode == 'zeros')


class Depthwise5x5Conv2d(nn.Conv2d):
    """A depthwise 5x5 conv (is_depthwise_5x5) whose weight gradient comes from four 3x3 ones (speed setting
    depthwise5x5_from_3x3): the same state as nn.Conv2d, which speed.apply swaps it in for and back. The same
    sums in another order; without gradients it is nn.Conv2d's forward."""

    def forward(self, x):
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _DepthwiseConvSame.apply(x, self.weight, 1, True)
        return super().forward(x)


def dilated_conv_split_backward(x: torch.Tensor, conv: nn.Conv2d, grad_from_3x3: bool = False) -> torch.Tensor:
    """A dilation-2 depthwise conv (padding k - 1, no bias) run the way that is fastest on CPUs, measured
    (README, "Performance"): the dilated conv itself forward, 3-8x faster there than the split, and the
    phase-split conv's gradients backward; forward and backward together are 2.8-4.7x faster than the
    dilated conv's. Stride 2 reads only the even sub-image: split when gradients are needed, direct
    otherwise. grad_from_3x3: a 5x5 kernel's weight gradient from four 3x3 ones (depthwise_conv_weight_grad)."""
    if conv.stride == (2, 2):
        return phase_split_conv(x, conv) if torch.is_grad_enabled() else conv(x)
    if not torch.is_grad_enabled() or not (x.requires_grad or conv.weight.requires_grad):
        return conv(x)
    return _DepthwiseConvSame.apply(x, conv.weight, 2, grad_from_3x3)


def _widening(C: int, M: int) -> int:
    """How many neighbouring pixels of an (M pixels x C channels) channels_last tensor to read as one row:
    the largest k <= 64 / C that divides M, so that a row holds up to 64 floats (4 cache lines)."""
    return next(k for k in range(max(1, 64 // C), 0, -1) if M % k == 0)


def _narrow_rows(x: torch.Tensor) -> int:
    """k for reading a narrow (< 16 channels) channels_last x as rows of k pixels of at least 16 floats, where
    ATen's batch-norm reductions would share cache lines between threads; 0 where that does not apply."""
    C = x.shape[1]
    if x.dim() != 4 or C >= 16 or _layout(x) != torch.channels_last:
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


def _wide_batch_statistics(rows: torch.Tensor, k: int, running_mean: torch.Tensor, running_var: torch.Tensor,
                           momentum: float):
    """Per-channel mean and biased variance of _rows(x, k), and the running statistics' update, as ATen's."""
    mean_k, var_k = torch.batch_norm_update_stats(rows, None, None, 0.0)  # per column; var biased
    mean = mean_k.view(k, -1).mean(0)
    var = var_k.view(k, -1).mean(0) + (mean_k.view(k, -1) - mean).square_().mean(0)
    count = rows.shape[0] * k
    with torch.no_grad():  # as ATen: running_var tracks the unbiased variance
        running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        running_var.mul_(1 - momentum).add_(var, alpha=momentum * count / max(count - 1, 1))
    return mean, var


def _batch_statistics(z: torch.Tensor, k: int, running_mean: torch.Tensor, running_var: torch.Tensor,
                      momentum: float):
    """Per-channel mean and biased variance of z, updating the running statistics as ATen's training-mode
    batch norm: on rows of k pixels (_wide_batch_statistics) where k > 0, else with ATen's own kernel."""
    if k:
        return _wide_batch_statistics(_rows(z, k), k, running_mean, running_var, momentum)
    return torch.batch_norm_update_stats(z, running_mean, running_var, momentum)


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


class _WideBatchNorm(torch.autograd.Function):
    """Training-mode batch norm of a narrow channels_last CPU tensor, computed on a wider view of it.

    ATen's channels_last batch-norm kernels reduce over the N*H*W pixels with one accumulator row of C floats
    per thread, laid out side by side; when C floats are less than a 64-byte cache line (C < 16 in fp32) the
    threads' rows share cache lines, which bounce between cores on every pixel. Read as rows of k pixels
    (k*C columns, no copy), the same memory gives every thread its own lines: ATen's kernels then reduce
    per column, and the k columns of each channel are combined here (means and biased variances of equal
    counts: var = mean of the variances + variance of the means; sums add). The normalisation and the input
    gradient are elementwise with per-channel coefficients, repeated k times along a row. Measured on this
    project's 2-core CPU against nn.BatchNorm2d (README, "Performance"). Only the order of float sums differs."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, k):
        mean, var = _wide_batch_statistics(_rows(x, k), k, running_mean, running_var, momentum)
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
    """nn.BatchNorm2d (same state_dict, same results to float rounding) that sidesteps ATen's false sharing
    for fewer than 16 channels laid out channels_last on CPU in training mode (see _WideBatchNorm); every
    other case, and shapes whose pixels cannot be grouped into rows of 16 floats or more, runs
    nn.BatchNorm2d's own forward. A speed setting: speed.apply swaps narrow BatchNorm2d modules to this class
    and back."""

    def forward(self, x):
        if not (self.training and self.track_running_stats and x.device.type == 'cpu' and x.dim() == 4
                and x.dtype in (torch.float32, torch.float64) and _layout(x) == torch.channels_last
                and not torch.compiler.is_compiling()):
            return super().forward(x)
        k = _narrow_rows(x)
        if not k:
            return super().forward(x)
        self._check_input_dim(x)
        return _WideBatchNorm.apply(x, self.weight, self.bias, self.running_mean, self.running_var,
                                    _count_batch(self), self.eps, k)


def train_mode_affine(bn: nn.BatchNorm2d, z: torch.Tensor):
    """(scale, shift), per channel, such that bn(z) == z * scale + shift for a BatchNorm2d in training mode
    (to float rounding); like bn(z), it updates bn's running statistics and num_batches_tracked. Lets a caller
    fold the normalisation into a multiply-add it does anyway (model_search.MixedOp, without autograd)."""
    mean, var = _batch_statistics(z, _narrow_rows(z), bn.running_mean, bn.running_var, _count_batch(bn))
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
    the gradient by w_i in a pass of its own). Only the floating-point order of sums differs."""

    @staticmethod
    def forward(ctx, weights, bns, momenta, *zs):
        ks = [_narrow_rows(z) for z in zs]
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


def batch_norm_mix(zs, weights: torch.Tensor, bns) -> torch.Tensor:
    """sum_i weights[i] * bns[i](zs[i]), with autograd, for BatchNorm2d layers in training mode without affine
    parameters (the supernet's): see _BatchNormMix. Updates each bn's running statistics as bn(z) would."""
    assert all(bn.training and bn.track_running_stats and bn.weight is None for bn in bns)
    return _BatchNormMix.apply(weights, list(bns), [_count_batch(bn) for bn in bns], *zs)


def add_per_channel(out, y: torch.Tensor = None, coefficient: torch.Tensor = None,
                    shift: torch.Tensor = None) -> torch.Tensor:
    """out += y * coefficient[c] + shift[c] per channel c, in place (y or shift may be None); with out None,
    a new tensor y * coefficient[c] (+ shift[c]). Channels_last tensors run on their rows of k pixels with the
    coefficients repeated k times: a long vectorised inner loop where a narrow (C, 1, 1) broadcast is slow
    (0.9 against 1.3 ms for an addcmul over 256 x 8 x 32 x 32 here)."""
    like = out if out is not None else y
    tensors = [t for t in (out, y) if t is not None]
    if like.dim() == 4 and all(_layout(t) == torch.channels_last for t in tensors):
        k = _widening(like.shape[1], like.numel() // like.shape[1])
        view, repeat = (lambda t: _rows(t, k)), (lambda c: c.repeat(k))
    else:
        view, repeat = (lambda t: t), (lambda c: c.view(-1, *[1] * (like.dim() - 2)))
    if out is None:
        out = torch.empty_like(y)
        if shift is None:
            torch.mul(view(y), repeat(coefficient), out=view(out))
        else:
            torch.addcmul(repeat(shift), view(y), repeat(coefficient), out=view(out))
        return out
    if y is not None:
        view(out).addcmul_(view(y), repeat(coefficient))
    if shift is not None:
        view(out).add_(repeat(shift))
    return out


def _max3(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The maximum of every 3 neighbours along dim -1 or -2 of x (which is padded by 1 there)."""
    n = x.shape[dim] - 2
    out = torch.maximum(x.narrow(dim, 0, n), x.narrow(dim, 1, n))
    return torch.maximum(out, x.narrow(dim, 2, n), out=out)


def separable_max_pool3x3(x: torch.Tensor) -> torch.Tensor:
    """max_pool_3x3 at stride 1 (padding 1) as a 3-wide max along rows, then one along columns: the same values
    bit for bit, and on CPU 1.8-3.2x faster than ATen's pooling kernel (measured here, channels_last, batch
    256: 9.4 -> 4.1 ms at 8 x 32 x 32, 27.4 -> 8.6 ms at 16 x 32 x 32, 1.2 -> 0.7 ms at 32 x 8 x 8). Written
    the same way, the average pool and the stride-2 max pool were slower in some of those shapes, so they stay
    ATen's. For inference only: it keeps no indices, and autograd through it would split gradients between
    tied maxima."""
    return _max3(_max3(F.pad(x, (1, 1, 1, 1), value=float('-inf')), -1), -2)


class SeparableMaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d that runs DARTS's stride-1 max_pool_3x3 as separable_max_pool3x3 on CPU when autograd does
    not need it (fitness evaluation, testing). A speed setting: speed.apply swaps the class in and out."""

    def forward(self, x):
        if (self.kernel_size == 3 and self.stride == 1 and self.padding == 1 and self.dilation == 1
                and not self.ceil_mode and x.dim() == 4 and x.device.type == 'cpu' and not torch.compiler.is_compiling()
                and not (torch.is_grad_enabled() and x.requires_grad)):
            return separable_max_pool3x3(x)
        return super().forward(x)


def box_filter_avg_pool3x3(x: torch.Tensor) -> torch.Tensor:
    """avg_pool_3x3 at stride 1 (padding 1, count_include_pad=False) as a depthwise conv with a kernel of ones
    (the 3x3 sums) times 1 / (the number of pixels each window covers inside the image). The same function;
    only rounding differs (a sum in another order, a multiply by 1/count against a divide). oneDNN's
    depthwise conv is faster than ATen's CPU average pool on larger images, forward and backward: measured
    here, channels_last, 2 threads, 256 x 8 x 32 x 32 without gradients 8.5 -> 3.2 ms, 64 x 16 x 32 x 32
    forward and backward 5.2 -> 2.7 ms, 64 x 32 x 16 x 16 1.9 -> 1.4 ms; at 8 x 8 it was slower."""
    C, (H, W) = x.shape[1], x.shape[-2:]
    box = x.new_ones(C, 1, 3, 3)
    inside = F.conv2d(x.new_ones(1, 1, H, W), box[:1], None, 1, 1)  # 4, 6 or 9 pixels per window
    return F.conv2d(x, box, None, 1, 1, 1, C).mul_(inside.reciprocal_())  # in place: one tensor less at the peak


class BoxFilterAvgPool2d(nn.AvgPool2d):
    """nn.AvgPool2d that runs DARTS's stride-1 avg_pool_3x3 as box_filter_avg_pool3x3 on CPU for images of at
    least 16 x 16 when autograd does not need it (fitness evaluation, testing). With autograd the op alone was
    faster too, but whole training steps measured in one process, alternating, were no faster (C=8) or slower
    (C=16: median 7.1 against 6.3 s), so training keeps ATen's pool. A speed setting: speed.apply swaps the
    class in and out."""

    def forward(self, x):
        if (self.kernel_size == 3 and self.stride == 1 and self.padding == 1 and not self.count_include_pad
                and not self.ceil_mode and self.divisor_override is None and x.dim() == 4
                and x.device.type == 'cpu' and min(x.shape[-2:]) >= 16 and not torch.compiler.is_compiling()
                and not (torch.is_grad_enabled() and x.requires_grad)):
            return box_filter_avg_pool3x3(x)
        return super().forward(x)


class SepConv(nn.Module):
    """Two stacked (ReLU, depthwise conv, pointwise conv, BN) blocks; only the first one strides."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)

    def forward_rectified(self, x, normalise: bool = True):
        """Everything after the first ReLU; without the closing BatchNorm when normalise is False."""
        for layer in itertools.islice(self.op, 1, None if normalise else len(self.op) - 1):
            x = layer(x)
        return x


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    """The `none` operation: zeros shaped like the (strided) input."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.)
        return x[:, :, ::self.stride, ::self.stride].mul(0.)


class FactorizedReduce(nn.Module):
    """Halves the resolution with two 1x1 stride-2 convs, the second shifted by one pixel."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        assert C_out % 2 == 0, "FactorizedReduce needs an even number of output channels"
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        return self.forward_rectified(self.relu(x))

    def forward_rectified(self, x, normalise: bool = True):
        x = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
        return self.bn(x) if normalise else x


def _conv_7x1_1x7(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        nn.BatchNorm2d(C, affine=affine),
    )


# Every entry builds an op that maps C channels to C channels at the given stride.
OPS = {
    'none': lambda C, stride, affine: Zero(stride),
    'avg_pool_3x3': lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    'max_pool_3x3': lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    'skip_connect': lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine),
    'sep_conv_3x3': lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    'sep_conv_5x5': lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    'sep_conv_7x7': lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine=affine),
    'dil_conv_3x3': lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    'dil_conv_5x5': lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
    'conv_7x1_1x7': _conv_7x1_1x7,
}
