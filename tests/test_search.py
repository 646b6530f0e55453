"""train_search.py end to end on the generated set: artifacts, fidelity of the records, resume, bad input."""
import json
import math
import os
import shutil

import pytest
import torch

import train_search
from architect_evolution import derive_genotype
from conftest import SEARCH_TINY as TINY
from conftest import call_main, run_script, without_timings
from genotypes import genotype_from_dict, load_genotype
from model import NetworkCIFAR

GENERATIONS = 3


@pytest.fixture(scope='module')
def finished_run(tiny_search):
    return tiny_search


def _has_module(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


def _has_tensorboard():
    return _has_module('tensorboard')


def _records(run_dir):
    records = []
    for g in range(1, GENERATIONS + 1):
        with open(os.path.join(run_dir, 'generations', f'gen_{g:03d}.json')) as f:
            records.append(without_timings(json.load(f)))
    return records


class TestSearchRun:
    def test_writes_every_artifact_and_nothing_else(self, finished_run):
        run_dir, _ = finished_run
        expected = {'.lock', 'args.json', 'dataset.json', 'checkpoint.pt', 'generations', 'genotype.json', 'log.txt',
                    'report.md', 'genotype_normal.dot', 'genotype_reduction.dot', 'genotype.txt'}
        if _has_tensorboard():
            expected.add('runs')
        if shutil.which('dot'):
            expected |= {'genotype_normal.png', 'genotype_reduction.png'}
        if _has_module('matplotlib'):
            expected |= {'fitness.png', 'diversity.png', 'operations.png'}
        assert set(os.listdir(run_dir)) == expected
        assert sorted(os.listdir(os.path.join(run_dir, 'generations'))) == [
            f'gen_{g:03d}.json' for g in range(1, GENERATIONS + 1)]
        with open(os.path.join(run_dir, 'args.json')) as f:
            assert json.load(f)['pop_size'] == 3
        log = open(os.path.join(run_dir, 'log.txt')).read()
        assert 'gen   3/3 | best' in log and 'fitness   3/  3' in log and 'train    0/   2' in log

    def test_checkpoint_loads_weights_only_and_holds_no_project_classes(self, finished_run):
        state = torch.load(os.path.join(finished_run[0], 'checkpoint.pt'), weights_only=True)
        assert state['generation'] == GENERATIONS and len(state['population']) == 3
        assert set(state) >= {'model', 'optimizer', 'scheduler', 'ga_generator', 'data_generator', 'rng', 'args'}

    def test_records_hold_every_individual_sorted_with_its_genotype_and_alphas(self, finished_run):
        for record in _records(finished_run[0]):
            population = record['population']
            assert len(population) == 3 and [p['rank'] for p in population] == [1, 2, 3]
            fitness = [p['fitness'] for p in population]
            assert fitness == sorted(fitness, reverse=True)
            assert record['best'] == fitness[0] and record['worst'] == fitness[-1]
            for p in population:
                alphas = [torch.tensor(p['alphas']['normal']), torch.tensor(p['alphas']['reduce'])]
                assert alphas[0].shape == (14, 8)
                assert genotype_from_dict(p['genotype']) == derive_genotype(alphas)
                assert 0. <= p['fitness'] <= 100. and math.isfinite(p['loss'])
            assert sorted(p['index'] for p in population) == [0, 1, 2]

    def test_genotype_json_is_the_best_of_the_last_generation_and_builds(self, finished_run):
        run_dir, result = finished_run
        genotype = load_genotype(os.path.join(run_dir, 'genotype.json'))
        best = _records(run_dir)[-1]['population'][0]
        assert genotype == genotype_from_dict(best['genotype'])
        model = NetworkCIFAR(4, 10, 5, True, genotype)
        assert model(torch.randn(2, 3, 32, 32))[0].shape == (2, 10)

    def test_best_fitness_rises_on_the_generated_set(self, finished_run):
        best = [record['best'] for record in _records(finished_run[0])]
        assert best[-1] > best[0], best

    def test_resuming_a_finished_run_does_nothing(self, finished_run):
        run_dir, _ = finished_run
        before = open(os.path.join(run_dir, 'genotype.json')).read()
        result = train_search.main(train_search.parse_args(['--resume', run_dir]))
        assert result['history'][-1]['generation'] == GENERATIONS
        assert open(os.path.join(run_dir, 'genotype.json')).read() == before


class TestKillAndResume:
    def test_killed_during_fitness_then_resumed_equals_uninterrupted_bit_for_bit(self, finished_run, tmp_path):
        run_dir = str(tmp_path / 'run')
        killed = run_script('train_search.py', *TINY, '--epochs', str(GENERATIONS), '--run_dir', run_dir,
                            env={'EVNAS_FAULT': 'kill@eval:2:1'})
        assert killed.returncode == -9, killed.stderr
        assert torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)['generation'] == 1
        assert call_main(train_search, ['--resume', run_dir]) == 0

        reference_dir = finished_run[0]
        assert _records(run_dir) == _records(reference_dir)
        assert open(os.path.join(run_dir, 'genotype.json')).read() == \
            open(os.path.join(reference_dir, 'genotype.json')).read()
        ours = torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)
        reference = torch.load(os.path.join(reference_dir, 'checkpoint.pt'), weights_only=True)
        for key in reference['model']:
            assert torch.equal(ours['model'][key], reference['model'][key]), key
        for a, b in zip(ours['population'], reference['population']):
            assert all(torch.equal(x, y) for x, y in zip(a['alphas'], b['alphas']))
            assert a['fitness'] == b['fitness']


class TestNonFiniteLoss:
    def test_stops_naming_generation_and_step_and_keeps_the_last_checkpoint(self, tmp_path, monkeypatch, capsys):
        run_dir = str(tmp_path / 'run')
        monkeypatch.setenv('EVNAS_FAULT', 'nan@train:2:1')
        assert call_main(train_search, TINY + ['--epochs', '3', '--run_dir', run_dir]) == 2
        err = capsys.readouterr().err
        assert 'non-finite at generation 2, step 1' in err and f'--resume {run_dir}' in err and 'generation 1' in err
        state = torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)
        assert state['generation'] == 1
        assert all(torch.isfinite(v).all() for v in state['model'].values() if v.is_floating_point())


class TestBadInput:
    @pytest.mark.parametrize('argv, message', [
        (['--tsize', '5', '--pop_size', '4'], '--tsize 5 is larger than --pop_size 4'),
        (['--num_elites', '4', '--pop_size', '4', '--tsize', '2'], '--num_elites must be in [0, --pop_size)'),
        (['--mutate_rate', '1.5', '--pop_size', '4', '--tsize', '2'], '--mutate_rate must be in [0, 1]'),
        (['--mutate_rate', '-0.1'], '--mutate_rate must be in [0, 1]'),
        (['--train_portion', '1'], '--train_portion must be in (0, 1)'),
        (['--train_portion', '0'], '--train_portion must be in (0, 1)'),
        (['--epochs', '0'], '--epochs must be at least 1'),
        (['--dataset', 'mnist'], "invalid choice: 'mnist'"),
        (['--learning_rate', '0'], '--learning_rate must be positive'),
    ])
    def test_refused_before_any_work(self, argv, message, capsys, tmp_path):
        assert call_main(train_search, argv + ['--run_dir', str(tmp_path / 'run')]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / 'run').exists(), 'nothing is created for a refused command'

    def test_resume_of_a_directory_that_is_not_a_run(self, tmp_path, capsys):
        assert call_main(train_search, ['--resume', str(tmp_path)]) == 2
        assert 'not a train_search.py run directory' in capsys.readouterr().err

    def test_resume_with_a_different_population_size_is_refused(self, finished_run, capsys):
        assert call_main(train_search, ['--resume', finished_run[0], '--pop_size', '5', '--tsize', '2']) == 2
        assert '--pop_size 5 differs from the run' in capsys.readouterr().err

    def test_existing_run_directory_without_resume(self, finished_run, capsys):
        assert call_main(train_search, TINY + ['--run_dir', finished_run[0]]) == 2
        assert 'already holds a run with completed work; continue it with --resume' in capsys.readouterr().err


class TestCompileOnCpu:
    def test_warns_and_still_searches_with_the_compiled_module(self, tmp_path, monkeypatch, capsys):
        # Compiling a supernet on CPU takes many minutes (docs/performance.md): torch.compile is replaced by a recorder
        # that returns the module unchanged, so the test checks the wiring and the warning, not inductor.
        compiled = []
        monkeypatch.setattr(torch, 'compile', lambda module, **options: compiled.append((module, options)) or module)
        run_dir = str(tmp_path / 'run')
        assert call_main(train_search, TINY + ['--epochs', '1', '--compile', '--run_dir', run_dir]) == 0
        out = capsys.readouterr().out
        assert '--compile on a CPU' in out and 'compiled' in out
        assert len(compiled) == 2, 'the fitness network and the training network are both compiled'
        assert all(options == {'dynamic': False, 'backend': 'inductor'} for _, options in compiled)
        assert os.path.exists(os.path.join(run_dir, 'genotype.json'))

    def test_fitness_alone_compiles_to_one_graph_per_batch_shape_and_measures_the_same(self, tmp_path, monkeypatch,
                                                                                      capsys):
        # Dynamo traces the real supernet (its graphs then run eagerly, without inductor's minutes of code
        # generation): 64 held-out images in batches of 48 and 16 give two graphs, which all three individuals
        # reuse, and the same fitness as the uncompiled network. Two layers (the last --layers counts) halve what
        # Dynamo traces.
        from torch._dynamo.testing import CompileCounter
        argv = TINY + ['--epochs', '1', '--valid_batch_size', '48', '--layers', '2']
        assert call_main(train_search, argv + ['--run_dir', str(tmp_path / 'eager')]) == 0
        counter, compiled, real_compile = CompileCounter(), [], torch.compile
        torch._dynamo.reset()
        monkeypatch.setattr(torch, 'compile', lambda module, **options: compiled.append(module) or
                            real_compile(module, **{**options, 'backend': counter}))
        capsys.readouterr()
        assert call_main(train_search, argv + ['--compile_fitness', '--run_dir', str(tmp_path / 'compiled')]) == 0
        torch._dynamo.reset()
        out = capsys.readouterr().out
        assert '--compile on a CPU' in out and 'fitness compiled' in out
        assert len(compiled) == 1 and type(compiled[0]).__name__ == 'Network', 'only the fitness network'
        assert counter.frame_count == 2, 'one graph for the full batches, one for the short last batch'
        ours, theirs = ([without_timings(json.load(open(tmp_path / run / 'generations' / 'gen_001.json')))
                         for run in ('compiled', 'eager')])
        assert [p['fitness'] for p in ours['population']] == [p['fitness'] for p in theirs['population']]
        assert [p['loss'] for p in ours['population']] == pytest.approx([p['loss'] for p in theirs['population']],
                                                                        rel=1e-5)

    def test_no_warning_without_compile(self, finished_run):
        with open(os.path.join(finished_run[0], 'log.txt')) as f:
            assert '--compile on a CPU' not in f.read()


class TestAmpOnCpu:
    def test_search_and_training_run_in_bfloat16(self, tmp_path, capsys):
        # --amp on a CPU is bfloat16 autocast through the fast defaults' own autograd functions (the
        # phase-split dilated convs among them, which the evaluation network uses too).
        import train
        run_dir = str(tmp_path / 'search')
        assert call_main(train_search, TINY + ['--epochs', '1', '--amp', '--run_dir', run_dir]) == 0
        assert ', bf16' in capsys.readouterr().out
        record = json.load(open(os.path.join(run_dir, 'generations', 'gen_001.json')))
        assert all(math.isfinite(individual['fitness']) for individual in record['population'])
        eval_dir = str(tmp_path / 'train')
        assert call_main(train, ['--dir', run_dir, '--dataset', 'synthetic', '--synthetic_size', '128',
                                 '--init_channels', '8', '--layers', '3', '--epochs', '1', '--auxiliary',
                                 '--batch_size', '32', '--device', 'cpu', '--amp', '--run_dir', eval_dir]) == 0
        summary = json.load(open(os.path.join(eval_dir, 'summary.json')))
        assert 'precision bf16' in capsys.readouterr().out and math.isfinite(summary['last_test_error'])
