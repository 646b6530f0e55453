"""Shared test helpers: the repository root on sys.path, tiny networks, and ways to run the scripts."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from runtime import stopping  # noqa: E402  (needs ROOT on sys.path)

SEARCH_TINY = ['--dataset', 'synthetic', '--synthetic_size', '128', '--init_channels', '4', '--layers', '3',
               '--pop_size', '3', '--tsize', '2', '--batch_size', '32', '--valid_batch_size', '64', '--device', 'cpu',
               '--report_freq', '1']


TRAIN_TINY = ['--arch', 'EvNASA', '--dataset', 'synthetic', '--synthetic_size', '192', '--init_channels', '4',
              '--layers', '3', '--batch_size', '32', '--device', 'cpu', '--report_freq', '2']
TRAIN_REFERENCE = TRAIN_TINY + ['--epochs', '2', '--auxiliary', '--cutout']


TIMING_KEYS = ('train_seconds', 'fitness_seconds', 'memory_mb')


def without_flag(argv: list, flag: str) -> list:
    """argv without `flag` and the value after it."""
    at = argv.index(flag)
    return argv[:at] + argv[at + 2:]


def without_timings(record: dict) -> dict:
    """A generation record without its wall-clock timings and memory peaks, which no two runs share."""
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def numerics_fingerprint() -> str:
    """A hash of what this machine's torch computes for a few of the supernet's kernels (depthwise, dilated and
    pointwise convolutions, BatchNorm, pooling, a linear layer, their gradients) at the current thread count.
    Two machines that report the same vector unit can still round differently (oneDNN picks kernels by CPU model,
    reductions split by thread count); where this hash matches a recording's, a bit-for-bit comparison with it
    is fair. Uses torch alone, so no change to the project can alter it."""
    import hashlib
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 16, 16, 16, generator=generator, requires_grad=True)
    depthwise = torch.randn(16, 1, 3, 3, generator=generator, requires_grad=True)
    dilated = torch.randn(16, 1, 5, 5, generator=generator, requires_grad=True)
    pointwise = torch.randn(16, 16, 1, 1, generator=generator, requires_grad=True)
    weight = torch.randn(10, 16, generator=generator, requires_grad=True)
    y = torch.nn.functional.conv2d(torch.relu(x), depthwise, padding=1, groups=16)
    y = y + torch.nn.functional.conv2d(x, dilated, padding=4, dilation=2, groups=16)
    y = torch.nn.functional.batch_norm(torch.nn.functional.conv2d(y, pointwise), None, None, training=True)
    y = torch.nn.functional.max_pool2d(y, 3, 1, 1) + torch.nn.functional.avg_pool2d(y, 3, 1, 1)
    logits = torch.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1) @ weight.t()
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(32) % 10)
    loss.backward()
    digest = hashlib.sha256()
    for t in (logits, x.grad, depthwise.grad, dilated.grad, pointwise.grad, weight.grad):
        digest.update(t.detach().numpy().tobytes())
    return digest.hexdigest()


def run_script(script: str, *argv: str, timeout: int = 300, env=None) -> subprocess.CompletedProcess:
    """Run a script as a user would, in a subprocess; returns the finished process (never raises on failure)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1')
    full_env.update(env or {})
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *argv], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT)


def call_main(module, argv) -> int:
    """Run module.main through the same error handling as the command line; returns the exit status."""
    try:
        args = module.parse_args([str(a) for a in argv])
    except SystemExit as e:
        return e.code
    return stopping.run_main(module.main, args)


@pytest.fixture(autouse=True)
def _single_thread_determinism():
    torch.manual_seed(0)
    yield


@pytest.fixture
def offline(monkeypatch):
    """Make every network connection fail at once, as on a machine without internet."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (simulated by the test)")

    monkeypatch.setattr(socket, 'getaddrinfo', refuse)
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


@pytest.fixture(scope='session')
def tiny_search(tmp_path_factory):
    """One uninterrupted 3-generation tiny search, shared by the tests that only read its results:
    (run directory, what train_search.main returned)."""
    import train_search
    run_dir = str(tmp_path_factory.mktemp('search') / 'run')
    result = train_search.main(train_search.parse_args(SEARCH_TINY + ['--epochs', '3', '--run_dir', run_dir]))
    return run_dir, result


@pytest.fixture(scope='session')
def tiny_training(tmp_path_factory):
    """One uninterrupted 2-epoch train.py run with every regulariser on: (run directory, main's result)."""
    import train
    run_dir = str(tmp_path_factory.mktemp('train') / 'run')
    result = train.main(train.parse_args(TRAIN_REFERENCE + ['--run_dir', run_dir]))
    return run_dir, result
