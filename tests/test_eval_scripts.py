"""test_cifar.py and test_imagenet.py end to end on generated data and checkpoints made here."""
import math
import os

import pytest
import torch
from PIL import Image

import genotypes
import test_cifar
import test_imagenet
from conftest import call_main, run_script
from inputs.augmentation import normalize
from inputs.data import load_dataset, make_synthetic
from model import NetworkCIFAR, NetworkImageNet

TINY = ['--init_channels', '4', '--layers', '5', '--dataset', 'synthetic', '--synthetic_size', '500',
        '--report_freq', '1000', '--device', 'cpu']


def _trained_like_cifar_model(arch='EvNASA', auxiliary=True):
    torch.manual_seed(1)
    model = NetworkCIFAR(4, 10, 5, auxiliary, genotypes.get_genotype(arch))
    # Non-trivial BatchNorm statistics, so that a checkpoint loaded wrongly would show in the accuracy.
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 32, 32))
    return model.eval()


def _reference_top1(model) -> float:
    test = load_dataset('synthetic', '', train=False, synthetic_size=500)
    with torch.no_grad():
        logits, _ = model.eval()(normalize(test.images, test.mean, test.std))
    return 100. * (logits.argmax(1) == test.labels).sum().item() / len(test)


@pytest.fixture(scope='module')
def model():
    return _trained_like_cifar_model()


class TestCifarCheckpointForms:
    @pytest.mark.parametrize('form', ['bare', 'module_prefixed', 'state_dict_wrapped', 'project_checkpoint'])
    def test_every_accepted_form_gives_the_reference_accuracy(self, tmp_path, model, form):
        sd = model.state_dict()
        obj = {
            'bare': sd,
            'module_prefixed': {'module.' + k: v for k, v in sd.items()},
            'state_dict_wrapped': {'epoch': 3, 'state_dict': {'module.' + k: v for k, v in sd.items()},
                                   'best_acc_top1': 1.0},
            'project_checkpoint': {'model': sd, 'epoch': 3, 'args': {'layers': 5}},
        }[form]
        path = tmp_path / 'weights.pt'
        torch.save(obj, path)
        # The published CIFAR files hold auxiliary_head.* keys; without --auxiliary they are dropped.
        result = test_cifar.main(test_cifar.parse_args(TINY + ['--arch', 'EvNASA', '--model_path', str(path)]))
        assert result['top1'] == _reference_top1(model)
        assert result['samples'] == 100
        assert result['params_mb'] == pytest.approx(sum(
            p.numel() for n, p in model.named_parameters() if 'auxiliary' not in n) / 1e6)

    def test_auxiliary_flag_loads_the_auxiliary_head(self, tmp_path, model):
        path = tmp_path / 'weights.pt'
        torch.save(model.state_dict(), path)
        assert call_main(test_cifar, TINY + ['--arch', 'EvNASA', '--auxiliary', '--model_path', path]) == 0

    def test_auxiliary_flag_without_auxiliary_keys_is_refused(self, tmp_path, capsys):
        path = tmp_path / 'weights.pt'
        torch.save(_trained_like_cifar_model(auxiliary=False).state_dict(), path)
        assert call_main(test_cifar, TINY + ['--arch', 'EvNASA', '--auxiliary', '--model_path', path]) == 2
        assert 'missing keys: auxiliary_head.' in capsys.readouterr().err


class TestCifarFailures:
    def test_checkpoint_of_another_architecture(self, tmp_path, capsys):
        path = tmp_path / 'weights.pt'
        torch.save(_trained_like_cifar_model('EvNASB').state_dict(), path)
        assert call_main(test_cifar, TINY + ['--arch', 'EvNASA', '--model_path', path]) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1, 'one line'
        assert 'does not match EvNASA on synthetic (C=4, layers=5, classes=10, auxiliary off)' in err
        assert 'cells.' in err

    def test_checkpoint_of_another_width(self, tmp_path, capsys):
        path = tmp_path / 'weights.pt'
        torch.save(NetworkCIFAR(6, 10, 5, False, genotypes.EvNASA).state_dict(), path)
        assert call_main(test_cifar, TINY + ['--arch', 'EvNASA', '--model_path', path]) == 2
        assert 'mis-shaped keys: stem.0.weight (file 18x3x3x3, model 12x3x3x3)' in capsys.readouterr().err

    def test_unknown_architecture(self, tmp_path, capsys):
        assert call_main(test_cifar, TINY + ['--arch', 'EvNASQ', '--model_path', tmp_path / 'x.pt']) == 2
        assert "unknown architecture 'EvNASQ'" in capsys.readouterr().err

    def test_truncated_checkpoint(self, tmp_path, capsys):
        path = tmp_path / 'weights.pt'
        torch.save(_trained_like_cifar_model().state_dict(), path)
        path.write_bytes(path.read_bytes()[:5000])
        assert call_main(test_cifar, TINY + ['--arch', 'EvNASA', '--model_path', path]) == 2
        err = capsys.readouterr().err
        assert 'cannot load checkpoint' in err and err.count('\n') == 1

    def test_text_file_is_not_a_checkpoint(self, tmp_path, capsys):
        path = tmp_path / 'weights.pt'
        path.write_text('hello')
        assert call_main(test_cifar, TINY + ['--arch', 'EvNASA', '--model_path', path]) == 2
        assert 'cannot load checkpoint' in capsys.readouterr().err

    def test_missing_checkpoint(self, tmp_path, capsys):
        assert call_main(test_cifar, TINY + ['--arch', 'EvNASA', '--model_path', tmp_path / 'nope.pt']) == 2
        assert 'does not exist' in capsys.readouterr().err

    @pytest.mark.parametrize('dataset, folder', [('cifar10', 'cifar-10-batches-py'), ('cifar100', 'cifar-100-python')])
    def test_missing_data_offline(self, tmp_path, capsys, offline, dataset, folder):
        weights = tmp_path / 'x.pt'  # read before the data, so it must exist for the data's error to show
        torch.save({'w': torch.zeros(1)}, weights)
        argv = ['--dataset', dataset, '--data', tmp_path / 'data', '--arch', 'EvNASA', '--model_path', weights,
                '--device', 'cpu']
        assert call_main(test_cifar, argv) == 2
        err = capsys.readouterr().err
        assert f'{dataset} not found under' in err and folder in err and 'download failed' in err
        assert err.count('\n') == 1

    def test_bad_numbers_are_refused_before_work(self, capsys):
        assert call_main(test_cifar, ['--batch_size', '0']) == 2
        assert '--batch_size must be at least 1' in capsys.readouterr().err

    def test_command_line_exit_status_and_one_line(self, tmp_path):
        path = tmp_path / 'weights.pt'
        path.write_bytes(b'\x00' * 100)
        done = run_script('test_cifar.py', *TINY, '--arch', 'EvNASA', '--model_path', str(path))
        assert done.returncode == 2
        assert done.stderr.startswith('error: cannot load checkpoint') and done.stderr.count('\n') == 1
        assert 'Traceback' not in done.stderr + done.stdout


def _image_folder(root, classes=3, per_class=4, size=64, unreadable=None):
    array = make_synthetic(False, classes * per_class * 3, num_classes=classes, image_size=size, seed=5)
    for c in range(classes):
        os.makedirs(root / 'val' / f'class{c}', exist_ok=True)
    counts = [0] * classes
    for img, label in zip(array.images, array.labels.tolist()):
        if counts[label] < per_class:
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / 'val' / f'class{label}' / f'{counts[label]}.png')
            counts[label] += 1
    if unreadable:
        (root / 'val' / 'class1' / unreadable).write_bytes(b'not an image at all')
    return root


class TestImageNetScript:
    ARGS = ['--init_channels', '8', '--layers', '3', '--image_size', '64', '--num_workers', '0',
            '--report_freq', '1', '--device', 'cpu', '--arch', 'EvNASC', '--batch_size', '5']

    def test_published_style_checkpoint_loads_and_evaluates(self, tmp_path):
        data = _image_folder(tmp_path)
        model = NetworkImageNet(8, 3, 3, True, genotypes.EvNASC)
        path = tmp_path / 'model_best.pth.tar'
        torch.save({'epoch': 250, 'state_dict': {'module.' + k: v for k, v in model.state_dict().items()},
                    'best_acc_top1': 75.6, 'optimizer': torch.optim.SGD(model.parameters(), 0.1).state_dict()}, path)
        result = test_imagenet.main(test_imagenet.parse_args(
            self.ARGS + ['--data', str(data), '--model_path', str(path)]))
        assert result['samples'] == 12
        assert 0 <= result['top1'] <= 100 and math.isnan(result['top5']), '3 classes: top-5 would always be 100 %'

    def test_missing_val_folder(self, tmp_path, capsys):
        torch.save({'w': torch.zeros(1)}, tmp_path / 'w.pt')  # weights are read first, so they must exist
        assert call_main(test_imagenet, self.ARGS + ['--data', tmp_path, '--model_path', tmp_path / 'w.pt']) == 2
        err = capsys.readouterr().err
        assert 'val does not exist' in err and 'one folder per class' in err

    def test_unreadable_image_is_named(self, tmp_path, capsys):
        data = _image_folder(tmp_path, unreadable='broken.png')
        path = tmp_path / 'weights.pt'
        torch.save(NetworkImageNet(8, 3, 3, False, genotypes.EvNASC).state_dict(), path)
        assert call_main(test_imagenet, self.ARGS + ['--data', data, '--model_path', path]) == 2
        err = capsys.readouterr().err
        assert 'cannot read image' in err and 'broken.png' in err and err.count('\n') == 1


@pytest.mark.parametrize('module', [test_cifar, test_imagenet])
def test_help_works_without_data(module, capsys):
    with pytest.raises(SystemExit) as e:
        module.parse_args(['--help'])
    assert e.value.code == 0
    assert '--model_path' in capsys.readouterr().out
