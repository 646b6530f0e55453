"""What a new user meets in the first hour: failed starts that can be retried, evaluation of a run by its
directory, architecture flags that cannot contradict each other, one-line errors, the original's flags,
augmentation that fits the images, warnings for degenerate set-ups, and run files others can read."""
import json
import math
import os
import shutil
import stat

import pytest
import torch

import report
import test_cifar
import train
import train_imagenet
import train_search
import utils
from conftest import SEARCH_TINY, TRAIN_TINY, call_main, run_script
from engine import Tally, top5_text
from inputs.augmentation import draw_augment, normalize, training_augment
from inputs.data import make_synthetic
from inputs.loaders import TensorLoader
from runtime import devices, logs, stopping
from runtime.checkpoint import atomic_save, atomic_write_text
from runtime.run_dirs import new_run_dir
from runtime.settings import Augment


def _failed_start(run_dir, program='train_search'):
    """What a start that failed before its first checkpoint leaves: args.json and a log."""
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, 'args.json'), 'w') as f:
        json.dump({'program': program}, f)
    open(os.path.join(run_dir, 'log.txt'), 'w').write('a start that failed\n')


class TestFailedStarts:
    def test_missing_data_creates_no_run_directory(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        argv = ['--dataset', 'folder', '--data', str(tmp_path / 'no_images'), '--device', 'cpu']
        assert call_main(train_search, argv) == 2
        assert call_main(train_search, argv + ['--run_dir', str(tmp_path / 'named')]) == 2
        assert call_main(train, ['--arch', 'EvNASA'] + argv) == 2
        assert 'no_images' in capsys.readouterr().err
        assert os.listdir(tmp_path) == [], 'no timestamped or named directory left behind'

    def test_the_same_command_reuses_a_start_without_checkpoint(self, tmp_path, capsys):
        run_dir = str(tmp_path / 'run')
        _failed_start(run_dir)
        argv = SEARCH_TINY + ['--epochs', '1', '--run_dir', run_dir]
        assert call_main(train_search, argv) == 0
        assert os.path.isfile(os.path.join(run_dir, 'checkpoint.pt'))
        assert json.load(open(os.path.join(run_dir, 'args.json')))['epochs'] == 1, 'args.json of this start'
        capsys.readouterr()
        # With a completed generation the directory is a run to continue, not to overwrite.
        assert call_main(train_search, argv) == 2
        err = capsys.readouterr().err
        assert 'already holds a run' in err and f'--resume {run_dir}' in err

    def test_resume_compares_flags_newer_than_the_run_with_their_defaults(self, tiny_search, tmp_path, capsys):
        run_dir = str(tmp_path / 'old')
        shutil.copytree(tiny_search[0], run_dir)
        saved = json.load(open(os.path.join(run_dir, 'args.json')))
        del saved['no_flip'], saved['crop_padding']  # as a run recorded before the flags existed
        json.dump(saved, open(os.path.join(run_dir, 'args.json'), 'w'))
        assert call_main(train_search, ['--resume', run_dir, '--no_flip']) == 2
        assert '--no_flip True differs from the run\'s False' in capsys.readouterr().err
        args = train_search.parse_args(['--resume', run_dir, '--crop_padding', '4'])
        assert args.crop_padding == 4 and args.no_flip is False

    def test_resume_of_a_start_without_checkpoint_says_what_to_run(self, tmp_path, capsys):
        run_dir = str(tmp_path / 'run')
        _failed_start(run_dir)
        assert call_main(train_search, ['--resume', run_dir]) == 2
        err = capsys.readouterr().err
        assert 'stopped before its first generation completed' in err and f'--run_dir {run_dir}' in err
        assert err.count('\n') == 1
        _failed_start(str(tmp_path / 'train_run'), 'train')
        assert call_main(train, ['--resume', str(tmp_path / 'train_run')]) == 2
        assert 'before its first epoch completed' in capsys.readouterr().err
        assert call_main(train_search, ['--resume', str(tmp_path / 'train_run')]) == 2
        assert 'is a train.py run, not a train_search.py run' in capsys.readouterr().err

    def test_other_directories_are_refused(self, tmp_path):
        other = tmp_path / 'notes'
        other.mkdir()
        (other / 'thesis.tex').write_text('mine')
        with pytest.raises(utils.UserError, match='not a run directory of train_search.py'):
            new_run_dir(str(other), 'train_search')
        _failed_start(str(tmp_path / 'train_run'), 'train')
        with pytest.raises(utils.UserError, match='not a run directory of train_search.py'):
            new_run_dir(str(tmp_path / 'train_run'), 'train_search')
        assert new_run_dir(str(tmp_path / 'train_run'), 'train') == str(tmp_path / 'train_run')
        assert os.listdir(other) == ['thesis.tex']


class TestEvaluateARunByItsDirectory:
    def test_dir_gives_the_runs_last_epoch_accuracy(self, tiny_training):
        run_dir, result = tiny_training
        evaluated = test_cifar.main(test_cifar.parse_args(['--dir', run_dir, '--device', 'cpu']))
        assert evaluated['top1'] == result['history'][-1]['test_top1']
        assert evaluated['loss'] == pytest.approx(result['history'][-1]['test_loss'], rel=1e-5)

    def test_explicit_flags_override_the_run(self, tiny_training):
        args = test_cifar.parse_args(['--dir', tiny_training[0], '--layers', '5', '--arch', 'EvNASB'])
        assert args.layers == 5 and args.arch == 'EvNASB' and args.genotype is None
        assert args.init_channels == 4 and args.dataset == 'synthetic' and args.auxiliary
        assert args.model_path == os.path.join(tiny_training[0], 'weights.pt')

    def test_a_missing_model_path_is_reported_before_any_data(self, tmp_path, capsys):
        assert call_main(test_cifar, ['--arch', 'EvNASA', '--dataset', 'folder', '--data', tmp_path / 'none',
                                      '--model_path', tmp_path / 'nope.pt']) == 2
        err = capsys.readouterr().err
        assert 'nope.pt does not exist' in err and 'expected your images' not in err
        assert call_main(test_cifar, ['--dataset', 'synthetic']) == 2
        assert 'no weights to evaluate' in capsys.readouterr().err, 'no leftover default path'

    def test_a_search_checkpoint_is_named_as_such(self, tiny_search, capsys):
        path = os.path.join(tiny_search[0], 'checkpoint.pt')
        assert call_main(test_cifar, ['--dataset', 'synthetic', '--model_path', path]) == 2
        assert 'is a supernet checkpoint of train_search.py' in capsys.readouterr().err
        assert call_main(test_cifar, ['--dir', tiny_search[0]]) == 2
        assert 'is a train_search.py run' in capsys.readouterr().err

    def test_arch_defaults_agree(self):
        import test_imagenet
        assert test_cifar.parse_args(['--model_path', 'w.pt']).arch == 'EvNASA'
        assert test_imagenet.parse_args(['--model_path', 'w.pt']).arch == 'EvNASA'


class TestArchitectureFlags:
    def test_arch_dir_and_genotype_are_exclusive(self, tiny_search, capsys):
        assert call_main(train, TRAIN_TINY + ['--dir', tiny_search[0]]) == 2  # TRAIN_TINY has --arch
        assert 'give the architecture once: --arch and --dir' in capsys.readouterr().err
        assert call_main(train_imagenet, ['--genotype', 'g.json', '--arch', 'EvNASA']) == 2
        assert 'give the architecture once' in capsys.readouterr().err

    def test_dir_must_be_a_search_run(self, tiny_training, capsys):
        assert call_main(train, ['--dir', tiny_training[0], '--dataset', 'synthetic']) == 2
        err = capsys.readouterr().err
        assert 'is a train.py run, not a search run' in err and 'genotype.json' in err

    def test_the_search_hint_carries_its_data_flags(self):
        recorded = {'dataset': 'folder', 'data': '/data/digits', 'image_size': 28, 'no_flip': True, 'crop_padding': 2,
                    'cutout_length': 16, 'learning_rate': 0.025}  # and a flag the command does not carry
        command = report.train_command('my run', report.RecordedSearch.from_args(recorded))
        assert command == ("python train.py --dir 'my run' --dataset folder --data /data/digits --image_size 28 "
                           "--no_flip --crop_padding 2 --auxiliary --cutout")
        cifar = report.RecordedSearch.from_args({'dataset': 'cifar10', 'data': '../data'})
        assert report.train_command('r', cifar) == 'python train.py --dir r --auxiliary --cutout'

    def test_runs_end_with_the_next_command(self, tiny_training, tiny_search):
        log = open(os.path.join(tiny_training[0], 'log.txt')).read()
        assert f"python test_cifar.py --dir {tiny_training[0]}" in log and 'weights.pt' in log
        log = open(os.path.join(tiny_search[0], 'log.txt')).read()
        assert f"python train.py --dir {tiny_search[0]} --dataset synthetic --synthetic_size 128" in log


SCRIPTS = ['train_search.py', 'train.py', 'train_imagenet.py', 'test_cifar.py', 'test_imagenet.py', 'report.py',
           'visualize.py', 'bench.py']


@pytest.mark.parametrize('script', SCRIPTS)
def test_a_bad_flag_is_one_line(script):
    done = run_script(script, '--no_such_flag', '1')
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'usage:' not in done.stderr, done.stderr
    assert f'python {script} --help' in lines[0]


@pytest.mark.parametrize('module, argv', [
    (train_search, ['--batch_size', 'many']),
    (train, ['--arch', 'EvNASA', '--drop_path_prob', '1.5']),
    (test_cifar, ['--dataset', 'mnist']),
])
def test_bad_values_are_one_line(module, argv, capsys):
    assert call_main(module, argv) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: ')


def test_ctrl_c_before_the_loops_and_stops_under_torchrun_are_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    assert stopping.run_main(interrupted, None) == 130
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('stopped: interrupted by Ctrl-C') and 'Traceback' not in err

    def stopped(args):
        raise stopping.Stop('interrupted by SIGTERM during generation 2', 143)

    monkeypatch.setenv('RANK', '1')
    assert stopping.run_main(stopped, None) == 143 and capsys.readouterr().err == '', 'only rank 0 says it'
    monkeypatch.setenv('RANK', '0')
    assert stopping.run_main(stopped, None) == 143 and capsys.readouterr().err.count('stopped:') == 1


def test_messages_carry_no_errno_codes(tmp_path, capsys):
    (tmp_path / 'data').write_text('a file where a folder belongs')
    assert call_main(train_search, ['--data', tmp_path / 'data' / 'cifar', '--device', 'cpu']) == 2
    err = capsys.readouterr().err
    assert 'cannot be created' in err and 'Errno' not in err and 'offline' not in err, err


class TestOriginalFlags:
    def test_gpu_is_device_cuda_n(self, capsys):
        assert train.parse_args(TRAIN_TINY + ['--gpu', '1']).device == 'cuda:1'
        assert train_search.parse_args(['--gpu', '0']).device == 'cuda:0'
        assert train_search.parse_args([]).device == 'auto' and 'gpu' not in vars(train_search.parse_args([]))
        if not torch.cuda.is_available():
            assert call_main(test_cifar, ['--gpu', '0', '--model_path', 'w.pt']) == 2
            assert 'CUDA is not available' in capsys.readouterr().err

    def test_parallel_points_to_torchrun(self, capsys):
        assert call_main(train_imagenet, ['--arch', 'EvNASA', '--parallel', '--data', '/d']) == 2
        err = capsys.readouterr().err
        assert 'torchrun --nproc_per_node=NUM_GPUS train_imagenet.py --arch EvNASA --data /d' in err

    def test_cudnn_is_deterministic_by_default_on_cuda(self, monkeypatch):
        monkeypatch.setattr(torch.backends.cudnn, 'deterministic', False)
        monkeypatch.setattr(torch.backends.cudnn, 'benchmark', True)
        devices.configure_cudnn(torch.device('cpu'), False)
        assert torch.backends.cudnn.benchmark, 'nothing changes off CUDA'
        devices.configure_cudnn(torch.device('cuda'), train.parse_args(TRAIN_TINY).cudnn_benchmark)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        benchmark = train.parse_args(TRAIN_TINY + ['--cudnn_benchmark']).cudnn_benchmark
        devices.configure_cudnn(torch.device('cuda'), benchmark)
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic


def augment_of(args):
    """train.py's training augmentation, from its resolved arguments."""
    return training_augment(args.cutout, args.cutout_length, args.crop_padding, flip=not args.no_flip)


class TestAugmentationFlags:
    def test_defaults_draw_as_before(self):
        assert train_search.search_settings(train_search.parse_args([])).augment == \
            Augment(padding=4, flip=True, cutout_length=0)
        assert augment_of(train.parse_args(TRAIN_TINY + ['--cutout'])) == Augment(4, True, 16)
        # a run recorded before --crop_padding and --no_flip existed: the defaults (resumed, they fill args.json in)
        assert training_augment(cutout=False, cutout_length=16) == Augment()

    def test_no_flip_and_crop_padding_change_the_draws(self):
        flipped = draw_augment(256, 32, 32, Augment(), torch.Generator().manual_seed(0))
        assert 0 < int(flipped['flip'].sum()) < 256 and int(flipped['dy'].max()) == 8
        augment = train_search.search_settings(train_search.parse_args(['--no_flip', '--crop_padding', '2'])).augment
        params = draw_augment(256, 32, 32, augment, torch.Generator().manual_seed(0))
        assert not params['flip'].any() and int(params['dy'].max()) == 4 and int(params['dx'].max()) == 4

    def test_without_flip_and_crop_the_loader_only_normalises(self):
        array = make_synthetic(True, 10, image_size=8)
        augment = augment_of(train.parse_args(TRAIN_TINY + ['--no_flip', '--crop_padding', '0']))
        loader = TensorLoader(array, 10, augment=augment, generator=torch.Generator().manual_seed(0))
        (x, y), = list(loader)
        assert torch.allclose(x, normalize(array.images, array.mean, array.std), atol=1e-6)

    def test_recorded_in_args_json(self, tmp_path):
        run_dir = str(tmp_path / 'run')
        assert call_main(train_search, SEARCH_TINY + ['--epochs', '1', '--no_flip', '--crop_padding', '0',
                                                      '--run_dir', run_dir]) == 0
        saved = json.load(open(os.path.join(run_dir, 'args.json')))
        assert saved['no_flip'] is True and saved['crop_padding'] == 0
        assert '--no_flip --crop_padding 0' in open(os.path.join(run_dir, 'report.md')).read()


class TestSaidNotSilent:
    def test_tiny_data_warns_that_individuals_never_train(self, tiny_search):
        log = open(os.path.join(tiny_search[0], 'log.txt')).read()
        # SEARCH_TINY: 64 of 128 images train, batch 32 -> 2 steps for a population of 3
        assert 'a generation has 2 training step(s) (64 images, --batch_size 32) for 3 individuals: 1 of them ' \
               'never train the supernet' in log

    def test_no_top5_below_six_classes(self):
        tally = Tally('cpu')
        tally.update(torch.tensor(1.), torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))
        result = tally.result()
        assert math.isnan(result['top5']) and top5_text(result) == ''
        tally = Tally('cpu')
        tally.update(torch.tensor(1.), torch.eye(6)[:4], torch.tensor([0, 1, 2, 3]))
        assert tally.result()['top5'] == 100. and top5_text(tally.result()) == ' | top5 100.00'

    def test_download_failure_in_words(self, tmp_path, offline, capsys):
        assert call_main(train_search, ['--data', tmp_path / 'data', '--device', 'cpu']) == 2
        err = capsys.readouterr().err
        assert 'is this machine offline?' in err and 'Errno' not in err and '(101)' not in err


@pytest.mark.parametrize('mask, mode', [(0o022, 0o644), (0o027, 0o640)])
def test_run_files_follow_the_umask(tmp_path, mask, mode):
    previous = os.umask(mask)
    try:
        atomic_save({'w': torch.zeros(1)}, str(tmp_path / 'checkpoint.pt'))
        atomic_write_text(str(tmp_path / 'args.json'), '{}')
        logs.close_logger(logs.setup_logger('umask', str(tmp_path)))  # log.txt, as a run's logger opens it
    finally:
        os.umask(previous)
    for name in ('checkpoint.pt', 'args.json', 'log.txt'):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name
