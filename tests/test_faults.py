"""Fault injection: whatever happens, the last completed generation or epoch is safe, a resumed run equals an
uninterrupted one, and every bad input gets one clear line and exit status 2.

Crashes are real: the run is a subprocess that EVNAS_FAULT makes SIGKILL (or SIGTERM) itself at an exact
point (runtime/stopping.py). The references are the session's uninterrupted runs (conftest.py).
"""
import errno
import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile

import pytest
import torch

import bench
import test_cifar
import test_imagenet
import train
import train_imagenet
import train_search
from conftest import ROOT, SEARCH_TINY, TRAIN_REFERENCE, call_main, run_script, without_timings
from runtime import checkpoint, run_dirs


def _search_results(run_dir):
    records = [without_timings(json.load(open(os.path.join(run_dir, 'generations', f))))
               for f in sorted(os.listdir(os.path.join(run_dir, 'generations')))]
    state = torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)
    return records, open(os.path.join(run_dir, 'genotype.json')).read(), state


def assert_same_search(run_dir, reference_dir):
    records, genotype, state = _search_results(run_dir)
    ref_records, ref_genotype, ref_state = _search_results(reference_dir)
    assert records == ref_records, 'population, fitness and genotypes of every generation'
    assert genotype == ref_genotype
    for key in ref_state['model']:
        assert torch.equal(state['model'][key], ref_state['model'][key]), key
    for a, b in zip(state['population'], ref_state['population']):
        assert all(torch.equal(x, y) for x, y in zip(a['alphas'], b['alphas']))


def assert_same_training(run_dir, reference_dir):
    ours = torch.load(os.path.join(run_dir, 'weights.pt'), weights_only=True)
    reference = torch.load(os.path.join(reference_dir, 'weights.pt'), weights_only=True)
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in reference)
    assert torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)['history'] == \
        torch.load(os.path.join(reference_dir, 'checkpoint.pt'), weights_only=True)['history']


def _digests(run_dir):
    out = {}
    for root, _, files in os.walk(run_dir):
        for name in files:
            if name not in ('log.txt', '.lock'):
                path = os.path.join(root, name)
                out[os.path.relpath(path, run_dir)] = hashlib.sha256(open(path, 'rb').read()).hexdigest()
    return out


class TestKillSearch:
    @pytest.mark.parametrize('point, done', [
        ('kill@train:2:1', 1),    # in the middle of supernet training
        ('kill@evolve:2', 1),     # after selection, crossover and mutation, before the checkpoint
        ('kill@write:2', 1),      # while checkpoint.pt of generation 2 is being written
    ])
    def test_kill_then_resume_equals_uninterrupted(self, tiny_search, tmp_path, point, done):
        run_dir = str(tmp_path / 'run')
        killed = run_script('train_search.py', *SEARCH_TINY, '--epochs', '3', '--run_dir', run_dir,
                            env={'EVNAS_FAULT': point})
        assert killed.returncode == -9, killed.stderr[-2000:]
        assert torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)['generation'] == done
        if point.startswith('kill@write'):
            assert any(name.endswith('.tmp') for name in os.listdir(run_dir)), 'the write was interrupted'
        assert call_main(train_search, ['--resume', run_dir]) == 0
        assert not any(name.endswith('.tmp') for name in os.listdir(run_dir)), 'stale temporary files are removed'
        assert_same_search(run_dir, tiny_search[0])


class TestKillTraining:
    def test_kill_while_writing_the_checkpoint_then_resume_equals_uninterrupted(self, tiny_training, tmp_path):
        run_dir = str(tmp_path / 'run')
        killed = run_script('train.py', *TRAIN_REFERENCE, '--run_dir', run_dir, env={'EVNAS_FAULT': 'kill@write:2'})
        assert killed.returncode == -9, killed.stderr[-2000:]
        assert torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)['epoch'] == 1
        assert call_main(train, ['--resume', run_dir]) == 0
        assert_same_training(run_dir, tiny_training[0])


class TestOutOfMemory:
    """An allocation that fails, in each phase: one line naming the phase and what to lower, status 2, the last
    checkpoint intact, and --resume ending bit for bit where an uninterrupted run ends."""

    @staticmethod
    def assert_one_line(done, phase: str, script: str) -> str:
        assert done.returncode == 2, done.stderr[-2000:]
        assert 'Traceback' not in done.stderr, done.stderr[-2000:]
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith(f'stopped: out of memory in the {phase}'), line
        assert 'the cpu has ' in line and ' GB, the process reached ' in line
        assert f'is intact; continue with: python {script} --resume ' in line, line
        return line

    @pytest.mark.parametrize('point, phase, lower', [
        ('oom@train:2:1', 'supernet training', 'a new run takes less with --batch_size 16 or --amp'),
        ('oom@eval:2:1', 'fitness evaluation', 'with --valid_batch_size 32 or --fitness_dtype bf16 (a smaller '
                                               '--valid_batch_size changes the fitness'),
        ('oom@write:2', 'checkpoint', None),
    ])
    def test_a_search_says_which_phase_ran_out_and_resumes_bit_exact(self, tiny_search, tmp_path, point, phase,
                                                                      lower):
        run_dir = str(tmp_path / 'run')
        done = run_script('train_search.py', *SEARCH_TINY, '--epochs', '3', '--run_dir', run_dir,
                          env={'EVNAS_FAULT': point})
        line = self.assert_one_line(done, phase, 'train_search.py')
        assert (lower in line) if lower else 'a new run takes less' not in line
        assert 'the checkpoint after generation 1 in' in line
        assert torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)['generation'] == 1
        assert not any(name.endswith('.tmp') for name in os.listdir(run_dir))
        assert call_main(train_search, ['--resume', run_dir]) == 0
        assert_same_search(run_dir, tiny_search[0])

    def test_a_training_that_runs_out_in_its_evaluation_resumes_bit_exact(self, tiny_training, tmp_path):
        # (training.train_epochs wraps its training steps and checkpoint as it wraps the evaluation)
        run_dir = str(tmp_path / 'run')
        done = run_script('train.py', *TRAIN_REFERENCE, '--run_dir', run_dir, env={'EVNAS_FAULT': 'oom@test:2:0'})
        line = self.assert_one_line(done, 'evaluation', 'train.py')
        assert 'the checkpoint after epoch 1 in' in line and 'a new run takes less with --batch_size 16' in line
        assert torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)['epoch'] == 1
        assert call_main(train, ['--resume', run_dir]) == 0
        assert_same_training(run_dir, tiny_training[0])

    def test_a_real_allocation_failure_under_a_capped_address_space(self, tmp_path):
        # The address space is capped at what the process maps once torch is loaded plus 1 GB: a training step
        # of this supernet needs about 1.5 GB more, so the CPU allocator itself fails.
        driver = (
            'import resource, sys\n'
            'sys.path.insert(0, sys.argv[1])\n'
            'import train_search\n'
            'from runtime import stopping\n'
            'args = train_search.parse_args(sys.argv[2:])\n'
            'size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize:")).split()[1]) * 1024\n'
            'resource.setrlimit(resource.RLIMIT_AS, (size + 2 ** 30, resource.getrlimit(resource.RLIMIT_AS)[1]))\n'
            'sys.exit(stopping.run_main(train_search.main, args))\n')
        argv = ['--dataset', 'synthetic', '--synthetic_size', '512', '--init_channels', '8', '--layers', '5',
                '--pop_size', '2', '--tsize', '2', '--batch_size', '128', '--valid_batch_size', '64', '--epochs', '1',
                '--device', 'cpu', '--run_dir', str(tmp_path / 'run')]
        done = subprocess.run([sys.executable, '-c', driver, ROOT, *argv], capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert done.returncode == 2, done.stderr[-3000:]
        assert 'Traceback' not in done.stderr, done.stderr[-3000:]
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith('stopped: out of memory in the supernet training at --batch_size 128'), line
        assert 'a new run takes less with --batch_size 64' in line and 'no generation had completed' in line


class TestSignals:
    def test_sigterm_stops_the_search_at_a_safe_point_and_says_how_to_resume(self, tiny_search, tmp_path):
        run_dir = str(tmp_path / 'run')
        stopped = run_script('train_search.py', *SEARCH_TINY, '--epochs', '3', '--run_dir', run_dir,
                             env={'EVNAS_FAULT': 'term@train:2:0'})
        assert stopped.returncode == 128 + 15
        assert 'stopped: interrupted by SIGTERM during generation 2, training step 0' in stopped.stderr
        assert f'the checkpoint after generation 1 in {run_dir} is intact' in stopped.stderr
        assert f'python train_search.py --resume {run_dir}' in stopped.stderr
        assert 'Traceback' not in stopped.stderr
        assert call_main(train_search, ['--resume', run_dir]) == 0
        assert_same_search(run_dir, tiny_search[0])

    def test_ctrl_c_stops_training_at_a_safe_point(self, tiny_training, tmp_path):
        run_dir = str(tmp_path / 'run')
        stopped = run_script('train.py', *TRAIN_REFERENCE, '--run_dir', run_dir, env={'EVNAS_FAULT': 'int@train:2:1'})
        assert stopped.returncode == 128 + 2
        assert 'interrupted by Ctrl-C (SIGINT) during epoch 2, step 2' in stopped.stderr
        assert f'the checkpoint after epoch 1 in {run_dir} is intact' in stopped.stderr
        note = 'the checkpoint after epoch 1'
        assert (stopped.stdout + stopped.stderr).count(note) == 1, 'the terminal shows the note once'
        assert open(os.path.join(run_dir, 'log.txt')).read().count(note) == 1, 'and log.txt keeps it'
        assert call_main(train, ['--resume', run_dir]) == 0
        assert_same_training(run_dir, tiny_training[0])


def _damage(path, how):
    raw = open(path, 'rb').read()
    if how == 'truncated':
        data = raw[:len(raw) // 2]
    elif how == 'flipped_bytes':
        data = bytearray(raw)
        for i in range(len(raw) // 3, len(raw) // 3 + 64):  # inside the tensor data, past the zip headers
            data[i] ^= 0xFF
        data = bytes(data)
    elif how == 'empty':
        data = b''
    else:
        raise ValueError(how)
    open(path, 'wb').write(data)


class Exploit:
    marker = None

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class TestDamagedArtifacts:
    @pytest.fixture
    def search_copy(self, tiny_search, tmp_path):
        run_dir = str(tmp_path / 'run')
        shutil.copytree(tiny_search[0], run_dir)
        return run_dir

    @pytest.mark.parametrize('how', ['truncated', 'flipped_bytes', 'empty'])
    def test_damaged_search_checkpoint_is_refused_and_nothing_is_overwritten(self, search_copy, how, capsys):
        _damage(os.path.join(search_copy, 'checkpoint.pt'), how)
        before = _digests(search_copy)
        assert call_main(train_search, ['--resume', search_copy]) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and 'checkpoint' in err
        assert 'damaged' in err or 'cannot load' in err or 'empty' in err
        assert _digests(search_copy) == before

    def test_checkpoint_that_runs_code_is_refused_and_nothing_runs(self, search_copy, tmp_path, capsys):
        Exploit.marker = tmp_path / 'pwned'
        with open(os.path.join(search_copy, 'checkpoint.pt'), 'wb') as f:
            pickle.dump(Exploit(), f)
        assert call_main(train_search, ['--resume', search_copy]) == 2
        assert 'cannot load checkpoint' in capsys.readouterr().err
        assert not Exploit.marker.exists()

    def test_weights_that_run_code_are_refused_by_test_cifar(self, tmp_path, capsys):
        Exploit.marker = tmp_path / 'pwned'
        path = tmp_path / 'weights.pt'
        torch.save({'state_dict': Exploit()}, path)
        assert call_main(test_cifar, ['--arch', 'EvNASA', '--model_path', path, '--dataset', 'synthetic']) == 2
        assert not Exploit.marker.exists()

    def test_checkpoint_of_another_configuration_is_refused(self, search_copy, tmp_path, capsys):
        other = str(tmp_path / 'other')
        assert call_main(train_search, SEARCH_TINY + ['--epochs', '1', '--pop_size', '2', '--run_dir', other]) == 0
        shutil.copy(os.path.join(other, 'checkpoint.pt'), os.path.join(search_copy, 'checkpoint.pt'))
        before = _digests(search_copy)
        assert call_main(train_search, ['--resume', search_copy]) == 2
        assert 'checkpoint.pt was made with --epochs 1, not 3 as args.json says' in capsys.readouterr().err
        assert _digests(search_copy) == before

    def test_flipped_bytes_in_a_training_checkpoint(self, tiny_training, tmp_path, capsys):
        run_dir = str(tmp_path / 'run')
        shutil.copytree(tiny_training[0], run_dir)
        _damage(os.path.join(run_dir, 'checkpoint.pt'), 'flipped_bytes')
        assert call_main(train, ['--resume', run_dir]) == 2
        assert 'is damaged' in capsys.readouterr().err
        # test_cifar verifies the checksum of a project checkpoint too
        assert call_main(test_cifar, ['--arch', 'EvNASA', '--dataset', 'synthetic', '--init_channels', '4',
                                      '--layers', '3', '--model_path', os.path.join(run_dir, 'checkpoint.pt')]) == 2

    def test_a_flipped_byte_inside_bare_weights_is_refused(self, tiny_training, tmp_path, capsys):
        # weights.pt is a bare state_dict (no SHA-256 entry, as the original tools expect); the CRC-32 of each of
        # its zip records finds a single flipped bit in the middle of the largest tensor.
        path = tmp_path / 'weights.pt'
        shutil.copy(os.path.join(tiny_training[0], 'weights.pt'), path)
        argv = ['--arch', 'EvNASA', '--dataset', 'synthetic', '--init_channels', '4', '--layers', '3',
                '--model_path', str(path)]
        assert call_main(test_cifar, argv) == 0
        capsys.readouterr()
        with zipfile.ZipFile(path) as archive:
            record = max(archive.infolist(), key=lambda r: r.file_size)
        raw = bytearray(path.read_bytes())
        name_length, extra_length = struct.unpack('<HH', raw[record.header_offset + 26:record.header_offset + 30])
        raw[record.header_offset + 30 + name_length + extra_length + record.file_size // 2] ^= 0x01
        path.write_bytes(bytes(raw))
        assert torch.load(path, weights_only=True), 'torch.load itself does not notice'
        assert call_main(test_cifar, argv) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and f'is damaged: its record {record.filename} does not match the CRC-32' in err

    def test_weights_without_crcs_and_in_the_legacy_format_load(self, tmp_path, capsys):
        state = {'w': torch.arange(6.)}
        torch.serialization.set_crc32_options(False)
        try:
            torch.save(state, tmp_path / 'no_crc.pt')
        finally:
            torch.serialization.set_crc32_options(True)
        with zipfile.ZipFile(tmp_path / 'no_crc.pt') as archive:
            assert all(r.CRC == 0 for r in archive.infolist() if r.file_size), 'torch wrote no CRCs'
        assert torch.equal(checkpoint.load_checkpoint(str(tmp_path / 'no_crc.pt'))['w'], state['w'])
        assert capsys.readouterr().err == ''
        # PyTorch 1.5's format (the published weights may be in it): no CRCs at all, said in one line
        torch.save(state, tmp_path / 'legacy.pt', _use_new_zipfile_serialization=False)
        assert torch.equal(checkpoint.load_checkpoint(str(tmp_path / 'legacy.pt'))['w'], state['w'])
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and "legacy (pre-1.6) format, which carries no checksum" in err

    @pytest.mark.parametrize('edit, message', [
        (lambda g: g['normal'].__setitem__(2, ['conv_11x11', 0]), "unknown operation 'conv_11x11'"),
        (lambda g: g['reduce'].append(['skip_connect', 0]), 'two edges per node, got 9'),
    ])
    def test_bad_genotype_json_in_a_search_directory(self, search_copy, tmp_path, edit, message, capsys):
        path = os.path.join(search_copy, 'genotype.json')
        genotype = json.load(open(path))
        edit(genotype)
        open(path, 'w').write(json.dumps(genotype))
        assert call_main(train, ['--dir', search_copy, '--dataset', 'synthetic', '--run_dir', tmp_path / 'eval']) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / 'eval').exists() or not os.listdir(tmp_path / 'eval')


class TestNumericalFaults:
    def test_nan_loss_stops_training_naming_epoch_and_step(self, tmp_path, monkeypatch, capsys):
        run_dir = str(tmp_path / 'run')
        monkeypatch.setenv('EVNAS_FAULT', 'nan@train:2:1')
        assert call_main(train, TRAIN_REFERENCE + ['--run_dir', run_dir]) == 2
        err = capsys.readouterr().err
        assert 'non-finite at epoch 2, step 1' in err and 'checkpoint after epoch 1' in err
        assert torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)['epoch'] == 1

    def test_nan_fitness_ranks_last_and_is_never_an_elite(self, tmp_path, monkeypatch):
        run_dir = str(tmp_path / 'run')
        monkeypatch.setenv('EVNAS_FAULT', 'nan@eval:1:0')  # individual 0 of generation 1
        assert call_main(train_search, SEARCH_TINY + ['--epochs', '2', '--num_elites', '2', '--run_dir', run_dir]) == 0
        record = json.load(open(os.path.join(run_dir, 'generations', 'gen_001.json')))
        assert record['population'][-1]['index'] == 0 and record['population'][-1]['fitness'] is None
        assert all(p['fitness'] is not None for p in record['population'][:-1])
        nan_alphas = record['population'][-1]['alphas']
        elites = json.load(open(os.path.join(run_dir, 'generations', 'gen_002.json')))['population']
        assert all(p['alphas'] != nan_alphas for p in elites)


class TestBadCommandLines:
    @pytest.mark.parametrize('module, argv, message', [
        (train_search, ['--pop_size', '-3'], '--pop_size must be at least 1'),
        (train_search, ['--loader', 'dali'], "invalid choice: 'dali'"),
        (train_search, ['--valid_size', '0'], '--valid_size must be at least 1'),
        (train_search, ['--batch_size', 'many'], "invalid int value: 'many'"),
        (train, ['--arch', 'EvNASA', '--genotype', 'x.json'], 'give the architecture once'),
        (train, ['--arch', 'EvNASA', '--learning_rate', '-1'], '--learning_rate must be positive'),
        (train, ['--arch', 'EvNASA', '--dataset', 'svhn'], "invalid choice: 'svhn'"),
        (train_imagenet, ['--arch', 'EvNASA', '--lr_scheduler', 'step'], "invalid choice: 'step'"),
        (train_imagenet, ['--arch', 'EvNASA', '--label_smooth', '1'], '--label_smooth and --drop_path_prob'),
        (train_imagenet, ['--arch', 'EvNASA', '--workers', '-1'], '--workers must not be negative'),
        (test_cifar, ['--layers', '0'], '--layers must be at least 1'),
        (test_imagenet, ['--image_size', '0'], '--image_size must be at least 1'),
        (bench, ['--repeats', '0'], '--repeats must be at least 1'),
    ])
    def test_refused_before_any_work(self, module, argv, message, capsys):
        assert call_main(module, argv) == 2
        assert message in capsys.readouterr().err

    @pytest.mark.parametrize('module, argv', [(train_search, SEARCH_TINY), (train, TRAIN_REFERENCE)])
    def test_existing_run_directory_without_resume(self, module, argv, tmp_path, capsys):
        (tmp_path / 'run').mkdir()
        (tmp_path / 'run' / 'log.txt').write_text('an earlier run\n')
        assert call_main(module, argv + ['--run_dir', tmp_path / 'run']) == 2
        assert 'exists and is not a run directory of' in capsys.readouterr().err
        assert (tmp_path / 'run' / 'log.txt').read_text() == 'an earlier run\n'

    def test_unknown_device(self, capsys):
        assert call_main(test_cifar, ['--device', 'tpu:0', '--arch', 'EvNASA', '--model_path', 'w.pt']) == 2
        assert "unknown device 'tpu:0'" in capsys.readouterr().err


class TestDataProblems:
    def test_empty_class_folder_is_named(self, tmp_path, capsys):
        (tmp_path / 'val' / 'cat').mkdir(parents=True)
        (tmp_path / 'val' / 'dog').mkdir()
        torch.save({'w': torch.zeros(1)}, tmp_path / 'w.pt')  # weights are read first, so they must exist
        argv = ['--data', tmp_path, '--arch', 'EvNASA', '--model_path', tmp_path / 'w.pt']
        assert call_main(test_imagenet, argv) == 2
        err = capsys.readouterr().err
        assert str(tmp_path / 'val') in err and ('cat' in err or 'no valid file' in err.lower())


class TestDiskFaults:
    @pytest.mark.parametrize('error', [errno.ENOSPC, errno.EROFS])
    def test_failed_checkpoint_write_is_reported_and_the_previous_checkpoint_survives(
            self, tmp_path, monkeypatch, capsys, error):
        run_dir = str(tmp_path / 'run')
        real_save = torch.save

        def failing_save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and obj.get('generation') == 2:
                raise OSError(error, os.strerror(error))
            return real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, 'save', failing_save)
        assert call_main(train_search, SEARCH_TINY + ['--epochs', '3', '--run_dir', run_dir]) == 2
        err = capsys.readouterr().err
        assert 'cannot write' in err and os.strerror(error) in err and 'intact' in err
        assert checkpoint.load_checkpoint(os.path.join(run_dir, 'checkpoint.pt'))['generation'] == 1
        assert not any(name.endswith('.tmp') for name in os.listdir(run_dir))


class TestConcurrentRuns:
    @pytest.mark.parametrize('module', [train_search, train])
    def test_second_run_in_the_same_directory_refuses_to_start(self, module, tiny_search, tiny_training, tmp_path,
                                                               capsys):
        source = tiny_search[0] if module is train_search else tiny_training[0]
        run_dir = str(tmp_path / 'run')
        shutil.copytree(source, run_dir)
        before = _digests(run_dir)
        with run_dirs.RunLock(run_dir):
            assert call_main(module, ['--resume', run_dir]) == 2
        assert f'{run_dir} is in use by pid {os.getpid()}' in capsys.readouterr().err
        assert _digests(run_dir) == before
