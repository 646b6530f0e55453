"""train.py and train_imagenet.py on generated data: results, resume, several processes, bad input."""
import json
import os
import sys

import pytest
import torch
from PIL import Image

import genotypes
import test_cifar
import test_imagenet
import train
import train_imagenet
from conftest import ROOT, TRAIN_REFERENCE, TRAIN_TINY, call_main, run_script
from inputs.data import make_synthetic

TINY = TRAIN_TINY


@pytest.fixture(scope='module')
def trained(tiny_training):
    """A 2-epoch run with every regulariser on (auxiliary head, cutout, drop path)."""
    return tiny_training


class TestTrainCifar:
    def test_writes_the_run_directory(self, trained):
        run_dir, result = trained
        assert {'args.json', 'genotype.json', 'weights.pt', 'checkpoint.pt', 'summary.json', 'log.txt'} <= set(
            os.listdir(run_dir))
        summary = json.load(open(os.path.join(run_dir, 'summary.json')))
        history = result['history']
        assert [h['epoch'] for h in history] == [1, 2]
        assert summary['last_test_error'] == pytest.approx(100 - history[-1]['test_top1'])
        assert summary['best_test_top1'] == max(h['test_top1'] for h in history)
        assert history[0]['drop_path_prob'] == 0 and history[1]['drop_path_prob'] == pytest.approx(0.1)
        assert history[1]['lr'] == pytest.approx(0.0125), 'cosine over 2 epochs: 0.025, then 0.0125'
        assert genotypes.load_genotype(os.path.join(run_dir, 'genotype.json')) == genotypes.EvNASA

    def test_test_cifar_on_weights_reports_the_last_epoch_accuracy(self, trained):
        run_dir, result = trained
        evaluated = test_cifar.main(test_cifar.parse_args([
            '--arch', 'EvNASA', '--dataset', 'synthetic', '--synthetic_size', '192', '--init_channels', '4',
            '--layers', '3', '--batch_size', '32', '--device', 'cpu',
            '--model_path', os.path.join(run_dir, 'weights.pt')]))
        assert evaluated['top1'] == result['history'][-1]['test_top1']
        assert evaluated['loss'] == pytest.approx(result['history'][-1]['test_loss'], rel=1e-5)

    def test_weights_are_a_bare_state_dict_with_the_auxiliary_head(self, trained):
        weights = torch.load(os.path.join(trained[0], 'weights.pt'), weights_only=True)
        assert all(torch.is_tensor(v) for v in weights.values())
        assert any(k.startswith('auxiliary_head.') for k in weights)

    def test_trains_the_genotype_of_a_search_run_directory(self, tiny_search, tmp_path):
        search_dir = tiny_search[0]
        result = train.main(train.parse_args([a for a in TINY if a not in ('--arch', 'EvNASA')] + [
            '--dir', search_dir, '--epochs', '1', '--run_dir', str(tmp_path / 'eval')]))
        assert genotypes.load_genotype(str(tmp_path / 'eval' / 'genotype.json')) == \
            genotypes.load_genotype(os.path.join(search_dir, 'genotype.json'))
        assert len(result['history']) == 1

    def test_trains_a_legacy_genotype_pickle_of_the_original_search(self, tmp_path):
        import pickle
        (tmp_path / 'search').mkdir()
        (tmp_path / 'search' / 'genotype.pickle').write_bytes(pickle.dumps(genotypes.EvNASB))
        args = [a for a in TINY if a not in ('--arch', 'EvNASA')]
        assert call_main(train, args + ['--dir', tmp_path / 'search', '--epochs', '1',
                                        '--run_dir', tmp_path / 'eval']) == 0
        assert genotypes.load_genotype(str(tmp_path / 'eval' / 'genotype.json')) == genotypes.EvNASB


class TestTrainResume:
    def test_killed_mid_epoch_then_resumed_equals_uninterrupted_bit_for_bit(self, trained, tmp_path):
        run_dir = str(tmp_path / 'run')
        argv = TRAIN_REFERENCE + ['--run_dir', run_dir]
        killed = run_script('train.py', *argv, env={'EVNAS_FAULT': 'kill@train:2:3'})
        assert killed.returncode == -9, killed.stderr
        assert torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)['epoch'] == 1
        assert call_main(train, ['--resume', run_dir]) == 0
        ours = torch.load(os.path.join(run_dir, 'weights.pt'), weights_only=True)
        reference = torch.load(os.path.join(trained[0], 'weights.pt'), weights_only=True)
        assert ours.keys() == reference.keys()
        for key in reference:
            assert torch.equal(ours[key], reference[key]), key
        ours_state = torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)
        reference_state = torch.load(os.path.join(trained[0], 'checkpoint.pt'), weights_only=True)
        assert ours_state['history'] == reference_state['history']


class TestTrainBadInput:
    @pytest.mark.parametrize('argv, message', [
        (['--arch', 'EvNASZ'], "unknown architecture 'EvNASZ'"),
        (['--genotype', 'missing.json'], 'cannot read genotype file missing.json'),
        (['--dir', '/nonexistent/search'], 'neither genotype.json nor genotype.pickle'),
        ([], 'no architecture'),
        (['--arch', 'EvNASA', '--drop_path_prob', '1.5'], '--drop_path_prob must be in [0, 1)'),
        (['--arch', 'EvNASA', '--epochs', '0'], '--epochs must be at least 1'),
    ])
    def test_refused_before_training(self, argv, message, tmp_path, capsys):
        base = ['--dataset', 'synthetic', '--device', 'cpu', '--run_dir', str(tmp_path / 'run')]
        assert call_main(train, argv + base) == 2
        assert message in capsys.readouterr().err

    def test_malformed_genotype_file(self, tmp_path, capsys):
        path = tmp_path / 'g.json'
        data = genotypes.genotype_to_dict(genotypes.EvNASA)
        data['normal'][3] = ['conv_13x13', 1]
        path.write_text(json.dumps(data))
        assert call_main(train, ['--genotype', path, '--dataset', 'synthetic', '--run_dir', tmp_path / 'r']) == 2
        assert "unknown operation 'conv_13x13'" in capsys.readouterr().err

    def test_missing_data_offline(self, tmp_path, capsys, offline):
        assert call_main(train, ['--arch', 'EvNASA', '--data', tmp_path / 'none', '--device', 'cpu',
                                 '--run_dir', tmp_path / 'run']) == 2
        assert 'cifar10 not found under' in capsys.readouterr().err

    def test_resume_with_another_architecture_is_refused(self, trained, capsys):
        assert call_main(train, ['--resume', trained[0], '--init_channels', '8']) == 2
        assert '--init_channels 8 differs from the run' in capsys.readouterr().err

    def test_resume_of_a_search_directory_is_refused(self, tiny_search, capsys):
        assert call_main(train, ['--resume', tiny_search[0]]) == 2
        assert 'is a train_search.py run, not a train.py run' in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == 'win32', reason='gloo over localhost')
class TestTorchrun:
    def test_two_processes_on_cpu_match_one_with_the_same_global_batch(self, tmp_path):
        argv = TINY + ['--synthetic_size', '64', '--epochs', '1', '--batch_size', '16', '--drop_path_prob', '0',
                       '--report_freq', '1']
        single = train.main(train.parse_args(argv + ['--run_dir', str(tmp_path / 'single')]))
        torchrun = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
        import subprocess
        done = subprocess.run(torchrun + [os.path.join(ROOT, 'train.py'), *argv, '--run_dir', str(tmp_path / 'ddp')],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        run_dir = tmp_path / 'ddp'
        assert {'checkpoint.pt', 'weights.pt', 'log.txt', 'summary.json'} <= set(os.listdir(run_dir))
        log = (run_dir / 'log.txt').read_text()
        assert log.count('epoch   1/1 |') == 1, 'only rank 0 logs'
        assert 'x 2 processes' in log and '(8 per process)' in log
        state = torch.load(run_dir / 'checkpoint.pt', weights_only=True)
        assert len(state['rng']) == 2, 'one random state per rank'
        # Gradients are averaged over the global batch of 16 exactly as one process sees it; only the
        # BatchNorm statistics differ (8 images per process instead of 16), hence a tolerance.
        first_ddp = float(log.split('train    0/   4 | loss ')[1].split()[0])
        first_single = float(open(os.path.join(single['run_dir'], 'log.txt')).read()
                             .split('train    0/   4 | loss ')[1].split()[0])
        assert first_ddp == pytest.approx(first_single, rel=0.01)
        assert state['history'][0]['train_loss'] == pytest.approx(single['history'][0]['train_loss'], rel=0.02)


def _image_tree(root, size=64, classes=3, per_split=(24, 12)):
    for split, n, train_split in (('train', per_split[0], True), ('val', per_split[1], False)):
        array = make_synthetic(train_split, n, num_classes=classes, image_size=size, seed=3)
        for c in range(classes):
            os.makedirs(root / split / f'c{c}', exist_ok=True)
        for i, (img, label) in enumerate(zip(array.images, array.labels.tolist())):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / split / f'c{label}' / f'{i}.png')
    return root


class TestTrainImageNet:
    ARGS = ['--arch', 'EvNASA', '--init_channels', '8', '--layers', '3', '--image_size', '64', '--batch_size', '8',
            '--workers', '0', '--device', 'cpu', '--report_freq', '1']

    def test_few_steps_then_test_imagenet_loads_model_best(self, tmp_path):
        data = _image_tree(tmp_path / 'data')
        run_dir = tmp_path / 'run'
        result = train_imagenet.main(train_imagenet.parse_args(
            self.ARGS + ['--data', str(data), '--epochs', '2', '--run_dir', str(run_dir)]))
        assert {'checkpoint.pth.tar', 'model_best.pth.tar', 'summary.json'} <= set(os.listdir(run_dir))
        best = torch.load(run_dir / 'model_best.pth.tar', weights_only=True)
        assert best['best_acc_top1'] == result['summary']['best_top1']
        evaluated = test_imagenet.main(test_imagenet.parse_args([
            '--data', str(data), '--arch', 'EvNASA', '--init_channels', '8', '--layers', '3', '--image_size', '64',
            '--num_workers', '0', '--device', 'cpu', '--model_path', str(run_dir / 'model_best.pth.tar')]))
        assert evaluated['top1'] == result['summary']['best_top1']
        # from the run directory alone: its genotype, sizes, data and last epoch's weights
        by_dir = test_imagenet.main(test_imagenet.parse_args(['--dir', str(run_dir), '--num_workers', '0',
                                                              '--device', 'cpu']))
        assert by_dir['top1'] == result['summary']['last_top1']
        assert f"python test_imagenet.py --dir {run_dir}" in open(run_dir / 'log.txt').read()
        # 3 classes: no top-5, written as JSON's null (NaN is not JSON)
        summary = json.loads(open(run_dir / 'summary.json').read(),
                             parse_constant=lambda c: pytest.fail(f'summary.json holds {c}'))
        assert summary['best_top5'] is None and summary['last_top1'] == result['summary']['last_top1']

    def test_learning_rate_schedules(self):
        args = train_imagenet.parse_args(['--arch', 'EvNASA'])
        assert train_imagenet.learning_rate(args, 0) == pytest.approx(0.1)
        assert train_imagenet.learning_rate(args, 122) == pytest.approx(0.1 * 123 / 245)
        assert train_imagenet.learning_rate(args, 249) == pytest.approx(0.1 / 245 / 5)
        big = train_imagenet.parse_args(['--arch', 'EvNASA', '--batch_size', '1024', '--learning_rate', '0.5'])
        assert train_imagenet.learning_rate(big, 0) == pytest.approx(0.5 / 5), 'warm-up above batch 256'
        assert train_imagenet.learning_rate(big, 5) == pytest.approx(0.5 * 240 / 245)
        cosine = train_imagenet.parse_args(['--arch', 'EvNASA', '--lr_scheduler', 'cosine'])
        assert train_imagenet.learning_rate(cosine, 249) == pytest.approx(0.0, abs=1e-12)
        short = train_imagenet.parse_args(['--arch', 'EvNASA', '--epochs', '2'])
        assert [train_imagenet.learning_rate(short, e) for e in (0, 1)] == [0.1, 0.05]

    def test_missing_train_folder(self, tmp_path, capsys):
        assert call_main(train_imagenet, self.ARGS + ['--data', tmp_path, '--run_dir', tmp_path / 'run']) == 2
        assert 'train does not exist' in capsys.readouterr().err

    def test_label_smoothing_equals_p_darts_formula(self):
        torch.manual_seed(0)
        logits, target = torch.randn(6, 5), torch.randint(0, 5, (6,))
        eps = 0.1
        smooth = (1 - eps) * torch.nn.functional.one_hot(target, 5) + eps / 5
        p_darts = (-smooth * torch.log_softmax(logits, 1)).mean(0).sum()
        assert torch.nn.CrossEntropyLoss(label_smoothing=eps)(logits, target).item() == pytest.approx(p_darts.item())


@pytest.mark.parametrize('module', [train, train_imagenet])
def test_help_works_without_data(module, capsys):
    with pytest.raises(SystemExit) as e:
        module.parse_args(['--help'])
    assert e.value.code == 0
    assert '--resume' in capsys.readouterr().out
