"""export.py: a trained network as torch.export (.pt2) and ONNX, each checked against the eager network, and
the .pt2 and the example of docs/export.md run in a process that cannot import this repository."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import export
from conftest import ROOT, call_main
from genotypes import EvNASA
from model import NetworkCIFAR


@pytest.fixture(scope='module')
def exported(tiny_training):
    run_dir = tiny_training[0]
    assert call_main(export, ['--dir', run_dir]) == 0
    return run_dir, os.path.join(run_dir, 'export')


def _isolated(code: str, cwd) -> subprocess.CompletedProcess:
    """Python in isolated mode (-I: no PYTHONPATH, no current directory on sys.path) in `cwd`, outside the
    repository: only installed packages can be imported."""
    return subprocess.run([sys.executable, '-I', '-c', code], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_writes_the_files_and_what_the_network_expects(exported):
    run_dir, out = exported
    info = json.load(open(os.path.join(out, 'export.json')))
    dataset = json.load(open(os.path.join(run_dir, 'dataset.json')))
    assert info['input']['mean'] == dataset['mean'] and info['input']['std'] == dataset['std']
    assert info['input']['resize'] == 'to 32x32' and info['checks']['pt2']['passed']
    assert info['input']['shape'] == ['batch', 3, 32, 32] and info['num_classes'] == 10
    assert info['genotype']['normal'][0] == ['sep_conv_3x3', 0]
    model = NetworkCIFAR(4, 10, 3, False, EvNASA)
    assert info['params'] == sum(p.numel() for n, p in model.named_parameters() if 'auxiliary' not in n)
    assert info['macs'] > 0
    for name in ('pt2', 'onnx'):
        assert info['checks'][name]['max_abs_logit_difference'] <= 1e-4
        assert 'synthetic test images' in info['checks'][name]['inputs']
    assert os.path.getsize(os.path.join(out, 'model.pt2')) > 0 and os.path.getsize(os.path.join(out, 'model.onnx')) > 0


def test_the_pt2_runs_without_this_repository_at_any_batch_size(exported, tmp_path):
    run_dir, out = exported
    model = export.build({'network': 'cifar', 'genotype': EvNASA, 'architecture': 'EvNASA', 'init_channels': 4,
                          'layers': 3, 'model_path': os.path.join(run_dir, 'weights.pt')})
    inputs = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.save({'x': inputs, 'logits': model(inputs)}, tmp_path / 'expected.pt')
    code = f"""
import sys, torch
assert {ROOT!r} not in sys.path and '' not in sys.path
program = torch.export.load({os.path.join(out, 'model.pt2')!r}).module()
expected = torch.load('expected.pt')
for batch in (1, 5):
    difference = (program(expected['x'][:batch]) - expected['logits'][:batch]).abs().max().item()
    assert difference <= 1e-4, difference
assert not any(name in sys.modules for name in ('model', 'operations', 'genotypes'))
print('ok')
"""
    done = _isolated(code, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == 'ok', done.stderr[-2000:]


def test_the_onnx_file_runs_in_onnxruntime(exported):
    onnxruntime = pytest.importorskip('onnxruntime')
    run_dir, out = exported
    model = export.build({'network': 'cifar', 'genotype': EvNASA, 'architecture': 'EvNASA', 'init_channels': 4,
                          'layers': 3, 'model_path': os.path.join(run_dir, 'weights.pt')})
    session = onnxruntime.InferenceSession(os.path.join(out, 'model.onnx'), providers=['CPUExecutionProvider'])
    x = torch.randn(3, 3, 32, 32)
    (logits,) = session.run(['logits'], {'images': x.numpy()})
    with torch.no_grad():
        assert (torch.from_numpy(logits) - model(x)).abs().max().item() <= 1e-4


def test_altered_exported_weights_fail_the_parity_check(tiny_training, tmp_path, monkeypatch, capsys):
    real = export.export_program

    def altered(model, example, path):
        program = real(model, example, path)
        with torch.no_grad():
            for name, tensor in program.state_dict.items():
                if name.endswith('classifier.bias'):
                    tensor.add_(0.01)
        return program

    monkeypatch.setattr(export, 'export_program', altered)
    assert call_main(export, ['--dir', tiny_training[0], '--out', tmp_path]) == 2
    assert 'model.pt2 disagree(s) with the eager network' in capsys.readouterr().err
    info = json.load(open(tmp_path / 'export.json'))
    assert info['checks']['pt2']['passed'] is False and info['checks']['pt2']['max_abs_logit_difference'] > 1e-4
    assert info['checks']['onnx']['passed'] is True  # the ONNX file was made from the eager network
    assert not (tmp_path / 'model.pt2').exists() and (tmp_path / 'model.onnx').exists()


def test_a_failing_onnx_exporter_leaves_the_pt2(tiny_training, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator (simulated by the test)")
    monkeypatch.setattr(torch.onnx, 'export', broken)
    assert call_main(export, ['--dir', tiny_training[0], '--out', tmp_path]) == 0
    info = json.load(open(tmp_path / 'export.json'))
    assert 'unsupported operator' in info['checks']['onnx']['failed'] and info['checks']['pt2']['passed']


def test_published_style_weights_with_their_sizes(tmp_path):
    torch.manual_seed(0)
    model = NetworkCIFAR(4, 10, 3, True, EvNASA)  # published files hold the auxiliary head too
    torch.save(model.state_dict(), tmp_path / 'weights.pt')
    assert call_main(export, ['--arch', 'EvNASA', '--model_path', tmp_path / 'weights.pt', '--init_channels', '4',
                              '--layers', '3', '--out', tmp_path / 'out', '--latency', '--repeats', '2']) == 0
    info = json.load(open(tmp_path / 'out' / 'export.json'))
    assert info['classes'][:2] == ['airplane', 'automobile'] and info['checks']['pt2']['inputs'].endswith('images')
    assert info['latency']['eager']['batch_1_ms_per_image'] > 0
    assert 'batch_64_ms_per_image' in info['latency']['exported']


def test_readme_example_classifies_an_image_without_this_repository(exported, tmp_path):
    from PIL import Image
    readme = open(os.path.join(ROOT, 'docs', 'export.md')).read()
    example = re.search(r'<!-- export example -->\n```python\n(.*?)```', readme, re.S).group(1)
    assert len(example.strip().splitlines()) <= 10
    os.symlink(exported[1], tmp_path / 'export')
    Image.new('RGB', (40, 30), (200, 30, 30)).save(tmp_path / 'cat.png')
    done = _isolated(example, tmp_path)
    assert done.returncode == 0 and re.fullmatch(r'\d+ \d+\.\d%', done.stdout.strip()), done.stderr[-2000:]


@pytest.mark.parametrize('argv, message', [
    ([], 'nothing to export'),
    (['--dir', 'RUN', '--arch', 'EvNASA'], 'leave out --arch'),
    (['--dir', 'RUN', '--layers', '8'], 'leave out --layers'),
    (['--model_path', 'w.pt', '--device', 'cuda'], 'give --latency too'),
])
def test_refused(argv, message, capsys):
    assert call_main(export, argv) == 2
    assert message in capsys.readouterr().err


def test_a_search_run_is_named(tiny_search, capsys):
    assert call_main(export, ['--dir', tiny_search[0]]) == 2
    assert 'train_search.py run' in capsys.readouterr().err


def test_an_imagenet_run_directory(tmp_path):
    """train_imagenet.py's run files (args.json, genotype.json, checkpoint.pth.tar), at a small size."""
    from genotypes import save_genotype
    from model import NetworkImageNet
    from runtime.run_dirs import save_args
    torch.manual_seed(0)
    model = NetworkImageNet(4, 7, 3, True, EvNASA)
    torch.save({'epoch': 1, 'state_dict': model.state_dict()}, tmp_path / 'checkpoint.pth.tar')
    save_args(str(tmp_path), 'train_imagenet', {'init_channels': 4, 'layers': 3, 'image_size': 64,
                                                'data': str(tmp_path / 'nowhere'), 'auxiliary': True})
    save_genotype(EvNASA, str(tmp_path / 'genotype.json'))
    assert call_main(export, ['--dir', tmp_path]) == 0
    info = json.load(open(tmp_path / 'export' / 'export.json'))
    assert info['num_classes'] == 7 and info['input']['shape'] == ['batch', 3, 64, 64]
    assert info['input']['mean'] == [0.485, 0.456, 0.406] and info['network']['kind'] == 'imagenet'
    assert info['checks']['pt2']['max_abs_logit_difference'] <= 1e-4 and info['classes'] is None
    assert info['input']['resize'] == 'shorter side to 73, then the centre 64x64 crop'


def test_an_exported_program_moves_by_torch_exports_own_pass(tiny_training, tmp_path, monkeypatch):
    # export.py --latency --device cuda: the program goes through torch.export.passes.move_to_device_pass, not
    # through .to() on its module. Shown with the meta device, which every build of torch has.
    model = export.build(export.describe_network(export.parse_args(['--dir', tiny_training[0]])))
    program = export.export_program(model, torch.randn(2, 3, 32, 32), str(tmp_path / 'model.pt2'))
    moved = export._on(program, torch.device('meta'))
    assert {p.device.type for p in moved.parameters()} == {'meta'}
    assert {b.device.type for b in moved.buffers()} == {'meta'}
    assert export._on(model, torch.device('cpu')) is model
