"""Run as a child process by test_shape_grid.py: for each case, a network built with the CPU defaults against
the same network built paper-exact, one training step (forward, backward) and one forward without gradients.

    python tests/grid_child.py '[["supernet", 4, 7, 32], ...]'   # network, width, batch, image size

Networks: supernet (DARTS), evalnet (a DARTS evaluation network), nb201 and nb201_track (the NAS-Bench-201
supernet without and with running statistics in its cells).

Prints `START name` before a case and `DONE name {differences}` after it, so that a crash, an abort or a hang
names the case it happened in; the parent compares the differences with the tolerances.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import speed  # noqa: E402
import utils  # noqa: E402
from architect_evolution import darts_shapes, decode, random_individual  # noqa: E402
from genotypes import Genotype  # noqa: E402
from model import NetworkCIFAR  # noqa: E402
from model_search import Network  # noqa: E402
from model_search_nb201 import Network as NB201Network  # noqa: E402
from search_space import NB201  # noqa: E402

# Every primitive in both cells, each of them on a strided edge of the reduction cell too.
ALL_OPS = Genotype(
    normal=[('sep_conv_3x3', 0), ('sep_conv_5x5', 1), ('dil_conv_3x3', 0), ('dil_conv_5x5', 1),
            ('max_pool_3x3', 2), ('avg_pool_3x3', 0), ('skip_connect', 3), ('sep_conv_3x3', 1)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('avg_pool_3x3', 1), ('skip_connect', 0), ('dil_conv_5x5', 1),
            ('sep_conv_5x5', 0), ('dil_conv_3x3', 1), ('sep_conv_3x3', 2), ('skip_connect', 3)],
    reduce_concat=[2, 3, 4, 5],
)
LAYERS = 4  # normal, reduction, reduction after a reduction, normal after a reduction
GRADIENT_AGREEMENT = 2e-2  # float32 gradients of the two paths within 2 % (in norm, per tensor)


def build(network: str, width: int, batch: int, image_size: int, impl):
    if network == 'supernet':
        return Network(width, 10, LAYERS, impl=impl)
    if network.startswith('nb201'):
        return NB201Network(width, 1, 10, track_running_stats=network == 'nb201_track', impl=impl)
    # The auxiliary head pools an 8 x 8 map to 1 x 1 and normalises it: 32 x 32 images, more than one of them.
    model = NetworkCIFAR(width, 10, LAYERS, image_size >= 32 and batch > 1, ALL_OPS, impl=impl)
    model.drop_path_prob = 0.2
    return model


def _logits(output):
    return output[0] if isinstance(output, tuple) else output


def _loss(output, y):
    if isinstance(output, tuple) and output[1] is not None:
        return F.cross_entropy(output[0], y) + 0.4 * F.cross_entropy(output[1], y)
    return F.cross_entropy(_logits(output), y)


def gradient_error(grads: dict, reference: dict) -> float:
    """The largest over tensors of ||grad - reference|| relative to the reference's norm, or to a thousandth of
    the largest reference tensor's where its own is smaller."""
    floor = 1e-3 * max(g.norm() for g in reference.values())
    return max(((grads[n].double() - g.double()).norm() / torch.maximum(g.norm(), floor)).item()
               for n, g in reference.items())


def float64_gradients(network: str, width: int, image_size: int, state: dict, alphas, x, y) -> dict:
    """The gradients of the same step computed paper-exact in float64, the reference where float32 disagrees."""
    model = build(network, width, x.shape[0], image_size, speed.layers(speed.PAPER_EXACT)).double()
    model.load_state_dict(state)
    if alphas is not None:
        model.set_arch_parameters(alphas)
    torch.manual_seed(1)
    _loss(model(x.double()), y).backward()
    return {n: p.grad for n, p in model.named_parameters()}


def run_case(network: str, width: int, batch: int, image_size: int) -> dict:
    torch.manual_seed(0)
    exact = build(network, width, batch, image_size, speed.layers(speed.PAPER_EXACT))
    fast = build(network, width, batch, image_size, speed.layers(speed.default_config(torch.device('cpu'))))
    initial = {k: v.clone() for k, v in exact.state_dict().items()}
    fast.load_state_dict(initial)
    fast.to(memory_format=torch.channels_last)
    alphas = None
    if network == 'supernet':
        alphas = decode(random_individual(darts_shapes(4), utils.make_generator(1)).alphas)
    elif network.startswith('nb201'):
        alphas = NB201.decode(random_individual([(6, 5)], utils.make_generator(1)).alphas)
    if alphas is not None:
        exact.set_arch_parameters(alphas)
        fast.set_arch_parameters(alphas)
    x, y = torch.randn(batch, 3, image_size, image_size), torch.randint(0, 10, (batch,))
    out = {}
    # One training step's forward and backward; drop-path masks from the same random draws on both sides.
    torch.manual_seed(1)
    out_exact = exact(x)
    torch.manual_seed(1)
    out_fast = fast(x.contiguous(memory_format=torch.channels_last))
    loss_exact, loss_fast = _loss(out_exact, y), _loss(out_fast, y)
    loss_exact.backward()
    loss_fast.backward()
    out['train_logits'] = (_logits(out_fast) - _logits(out_exact)).abs().max().item()
    out['train_loss'] = abs(loss_fast.item() - loss_exact.item()) / abs(loss_exact.item())
    grads_exact = {n: p.grad for n, p in exact.named_parameters()}
    grads_fast = {n: p.grad for n, p in fast.named_parameters()}
    out['gradients'] = gradient_error(grads_fast, grads_exact)
    if out['gradients'] > GRADIENT_AGREEMENT:
        # Tiny batches make some steps ill-conditioned (BatchNorm over a few values): float32 rounding then moves
        # either path's gradients by percents. The float64 step says whether the fast path is the farther one.
        reference = float64_gradients(network, width, image_size, initial, alphas, x, y)
        out['gradients_from_float64'] = [gradient_error(grads_fast, reference), gradient_error(grads_exact, reference)]
    out['finite'] = all(torch.isfinite(p.grad).all().item() for p in fast.parameters())
    # The forward without gradients: fitness (DARTS supernet, BatchNorm in train mode; NAS-Bench-201 in eval
    # mode) or testing (eval mode).
    if network != 'supernet':
        exact.eval(), fast.eval()
    with torch.no_grad():
        out['forward_logits'] = (_logits(fast(x.contiguous(memory_format=torch.channels_last)))
                                 - _logits(exact(x))).abs().max().item()
    state_exact = exact.state_dict()
    out['running_statistics'] = max((value.double() - state_exact[name].double()).abs().max().item()
                                    for name, value in fast.state_dict().items() if 'running' in name)
    return out


def main(cases) -> None:
    for case in cases:
        name = '-'.join(map(str, case))
        print(f"START {name}", flush=True)
        print(f"DONE {name} {json.dumps(run_case(*case))}", flush=True)


if __name__ == '__main__':
    main(json.loads(sys.argv[1]))
