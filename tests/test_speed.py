"""The speed policy: which class each layer of a network gets under a setting, that networks built for the fast
defaults compute what the paper-exact ones compute (to float tolerance, float64 element by element), also
under bf16 autocast, and the process-wide malloc setting."""
import statistics
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import genotypes
import speed
import utils
from architect_evolution import darts_shapes, decode, random_individual
from conftest import ROOT
from model import NetworkCIFAR
from model_search import MixedOp, Network
from speed import kernels

CPU = speed.default_config(torch.device('cpu'))


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _supernet_pair(C=4, layers=5, dtype=torch.float32, seed=0):
    """(paper-exact, fast) supernets with the same weights and the same decoded individual."""
    torch.manual_seed(seed)
    exact = Network(C, 10, layers).to(dtype)
    fast = Network(C, 10, layers, impl=speed.layers(CPU)).to(dtype, memory_format=torch.channels_last)
    fast.load_state_dict(exact.state_dict())
    alphas = decode(random_individual(darts_shapes(4), utils.make_generator(1)).alphas)
    exact.set_arch_parameters(alphas)
    fast.set_arch_parameters(alphas)
    return exact, fast


class TestLayers:
    def test_the_fast_supernet_gets_each_kernel_where_it_applies_and_torch_nn_elsewhere(self):
        model = Network(4, 10, 5, impl=speed.layers(CPU))  # 4, 8 and 16 channels in the cells, 12 in the stem
        kinds = {(type(m), m.num_features) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
        assert kinds == {(kernels.NarrowBatchNorm2d, 4), (kernels.NarrowBatchNorm2d, 8),
                         (kernels.NarrowBatchNorm2d, 12), (nn.BatchNorm2d, 16)}
        assert {type(m) for m in model.modules() if isinstance(m, MixedOp)} == {kernels.FusedMixedOp}
        assert {type(m) for m in model.modules() if isinstance(m, nn.MaxPool2d)} == {nn.MaxPool2d}
        assert {type(m) for m in model.modules() if isinstance(m, nn.AvgPool2d)} == {kernels.BoxFilterAvgPool2d}
        convs = {name: type(m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
        split = {n for n, t in convs.items() if t is kernels.PhaseSplitDilatedConv2d}
        assert split and all(n.endswith(('._ops.6.op.1', '._ops.7.op.1')) for n in split), 'only the dil_convs'
        nchw = {n for n, t in convs.items() if t is kernels.NCHWStridedConv2d}
        # FactorizedReduce's two convs where they have fewer than 16 inputs: skip_connect on the strided edges
        # (inputs 0 and 1 of every node) of the first reduction cell (8 channels); the preprocess0 after it has
        # 4 * 4 = 16 inputs, and the second reduction cell's edges 16 channels.
        assert nchw == {f'cells.1._ops.{edge}._ops.3.{conv}' for edge in (0, 1, 2, 3, 5, 6, 9, 10)
                        for conv in ('conv_1', 'conv_2')}
        assert all(t is nn.Conv2d for n, t in convs.items() if n not in split | nchw)

    def test_the_paper_exact_setting_is_torch_nn_throughout(self):
        model = NetworkCIFAR(4, 10, 5, True, genotypes.EvNASA, impl=speed.layers(speed.PAPER_EXACT))
        own = {type(m).__module__ for m in model.modules()} - {'model', 'operations'}
        assert all(name.startswith('torch.nn') for name in own), own

    @pytest.mark.parametrize('build', [lambda impl: Network(4, 10, 5, impl=impl),
                                       lambda impl: NetworkCIFAR(4, 10, 5, True, genotypes.EvNASA, impl=impl)])
    def test_same_state_dict_keys_and_initial_weights_as_the_paper_exact_network(self, build):
        torch.manual_seed(0)
        exact = build(speed.layers(speed.PAPER_EXACT)).state_dict()
        torch.manual_seed(0)
        fast = build(speed.layers(CPU)).state_dict()
        assert list(fast) == list(exact)
        assert all(torch.equal(fast[k], exact[k]) for k in exact), 'the same random draws initialise both'

    def test_defaults_per_device(self):
        assert CPU == speed.SpeedConfig(**{name: True for name in speed.SETTINGS})
        cuda = speed.default_config(torch.device('cuda'))
        assert cuda.fused_mixed_op and cuda.channels_last and not cuda.reuse_freed_memory
        assert not (cuda.phase_split_dilated or cuda.narrow_batchnorm or cuda.box_filter_avg_pool)
        assert speed.config_for(torch.device('cpu'), paper_exact=True) == speed.PAPER_EXACT
        assert speed.config_for(torch.device('cpu')) == CPU
        assert speed.PAPER_EXACT.describe() == 'paper-exact (none)'
        assert CPU.without('channels_last').memory_format == torch.contiguous_format
        assert not CPU.without('fused_mixed_op', 'narrow_batchnorm').narrow_batchnorm


class TestWholeNetworks:
    @staticmethod
    def _step(exact, fast, dtype, batch=8):
        x, y = torch.randn(batch, 3, 32, 32, dtype=dtype), torch.randint(0, 10, (batch,))
        logits_exact, logits_fast = exact(x), fast(x.contiguous(memory_format=torch.channels_last))
        loss_exact, loss_fast = F.cross_entropy(logits_exact, y), F.cross_entropy(logits_fast, y)
        loss_exact.backward()
        loss_fast.backward()
        return (logits_exact, loss_exact, _grads(exact), exact.state_dict()), \
            (logits_fast, loss_fast, _grads(fast), fast.state_dict())

    def test_supernet_logits_loss_and_gradients_match_the_paper_exact_path(self):
        (logits_exact, loss_exact, g_exact, _), (logits_fast, loss_fast, g_fast, _) = self._step(
            *_supernet_pair(), torch.float32)
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
        (logits_exact, _, g_exact, state_exact), (logits_fast, _, g_fast, state_fast) = self._step(
            *_supernet_pair(init_channels, dtype=torch.float64), torch.float64)
        torch.testing.assert_close(logits_fast, logits_exact, rtol=0, atol=1e-10)
        for name in g_exact:
            torch.testing.assert_close(g_fast[name], g_exact[name], rtol=0, atol=1e-10 * g_exact[name].abs().max(),
                                       msg=name)
        # The training step's folded BatchNorms update running statistics and batch counts as BatchNorm2d does.
        for (name, a), b in zip(state_fast.items(), state_exact.values()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=name)

    @pytest.mark.parametrize('init_channels', [4, 16])
    def test_fitness_forward_in_float64_logits_and_running_statistics(self, init_channels):
        # Fitness folds each op's closing BatchNorm into its weighted add (FusedMixedOp): the logits and every
        # BatchNorm's running statistics and batch count must still be those of the paper-exact forward.
        exact, fast = _supernet_pair(init_channels, dtype=torch.float64, seed=3)
        x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
        with torch.no_grad():
            for _ in range(2):
                torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last)), exact(x),
                                           rtol=0, atol=1e-10)
        for (name, a), b in zip(fast.state_dict().items(), exact.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=name)

    def test_evaluation_network_with_dilated_convs_matches_in_training_and_testing(self):
        torch.manual_seed(2)
        exact = NetworkCIFAR(8, 10, 5, True, genotypes.EvNASA).double()
        fast = NetworkCIFAR(8, 10, 5, True, genotypes.EvNASA, impl=speed.layers(CPU)).double()
        fast.load_state_dict(exact.state_dict())
        fast.to(memory_format=torch.channels_last)
        x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
        (logits, aux), (logits_fast, aux_fast) = exact(x), fast(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(logits_fast, logits, rtol=0, atol=1e-10)
        # Random cotangents: a plain sum of logits has a near-zero gradient behind the last BatchNorms.
        g, g_aux = torch.randn_like(logits), torch.randn_like(aux)
        ((logits * g).sum() + (aux * g_aux).sum()).backward()
        ((logits_fast * g).sum() + (aux_fast * g_aux).sum()).backward()
        for name, g in _grads(exact).items():
            torch.testing.assert_close(_grads(fast)[name], g, rtol=0, atol=1e-10 * g.abs().max(), msg=name)
        with torch.no_grad():
            torch.testing.assert_close(fast.eval()(x)[0], exact.eval()(x)[0], rtol=0, atol=1e-10)


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
        exact, fast = _supernet_pair(init_channels)
        reference = Network(init_channels, 10, 5)
        reference.load_state_dict(exact.state_dict())
        reference.set_arch_parameters(exact.arch_parameters())
        torch.manual_seed(0)
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


def test_building_a_network_leaves_the_process_settings_alone():
    # malloc's settings are the scripts' explicit call (speed.configure_process), never a side effect of a build.
    code = ('import sys; sys.path.insert(0, sys.argv[1]); import speed, model_search, unittest.mock as m\n'
            'with m.patch.object(speed, "keep_freed_memory", side_effect=AssertionError("malloc changed")):\n'
            '    cpu = speed.default_config(__import__("torch").device("cpu"))\n'
            '    model_search.Network(4, 10, 3, impl=speed.layers(cpu))\n'
            'print("ok")')
    done = subprocess.run([sys.executable, '-c', code, ROOT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == 'ok', done.stderr


_TF32_SCRIPT = r'''
import sys, warnings
sys.path.insert(0, sys.argv[1])
warnings.simplefilter('error')  # mixing the old and the new precision API warns (or raises) in recent torch
import torch, speed
def state():
    conv = getattr(torch.backends.cudnn, 'conv', None)
    if conv is not None and hasattr(conv, 'fp32_precision'):
        return conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    return (('tf32' if torch.backends.cudnn.allow_tf32 else 'ieee'),
            ('tf32' if torch.backends.cuda.matmul.allow_tf32 else 'ieee'))
speed.configure_process(speed.PAPER_EXACT)
exact = state()
speed.configure_process(speed.default_config(torch.device('cuda')))
print(*exact, *state())
'''


def test_paper_exact_turns_tf32_off_and_the_defaults_keep_pytorchs():
    # In a fresh process: the precision flags are process-wide. They are flags only, so a CPU shows them.
    done = subprocess.run([sys.executable, '-c', _TF32_SCRIPT, ROOT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    exact_conv, exact_matmul, fast_conv, fast_matmul = done.stdout.split()
    assert (exact_conv, exact_matmul) == ('ieee', 'ieee')
    assert fast_conv == 'tf32'
    assert speed.float32_policy(speed.PAPER_EXACT, torch.device('cuda')).startswith('float32 (IEEE')
    assert speed.float32_policy(speed.PAPER_EXACT, torch.device('cpu')) == 'float32'
