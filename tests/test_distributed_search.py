"""train_search.py under torchrun on CPU (gloo): shared fitness evaluation, one writer, elastic restarts."""
import json
import os
import subprocess
import sys

import pytest

import train_search
from conftest import ROOT, SEARCH_TINY, run_script, without_flag, without_timings

ARGS = SEARCH_TINY + ['--epochs', '2', '--pop_size', '4', '--tsize', '2']


def torchrun(*argv, nproc=2, extra=(), env=None, timeout=600):
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', *extra,
               os.path.join(ROOT, 'train_search.py'), *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS='1', **(env or {})))


def records(run_dir):
    folder = os.path.join(run_dir, 'generations')
    return [without_timings(json.load(open(os.path.join(folder, name)))) for name in sorted(os.listdir(folder))]


def tree(run_dir):
    return sorted(os.path.relpath(os.path.join(root, name), run_dir)
                  for root, _, files in os.walk(run_dir) for name in files)


@pytest.fixture(scope='module')
def two_ranks(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp('ddp') / 'run')
    done = torchrun(*ARGS, '--run_dir', run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.fixture(scope='module')
def one_rank(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp('single') / 'run')
    done = run_script('train_search.py', *ARGS, '--run_dir', run_dir, env={'OMP_NUM_THREADS': '1'})
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


class TestTwoRanks:
    def test_fitness_matches_a_single_process_run_and_the_run_directory_has_the_same_shape(self, two_ranks, one_rank):
        assert tree(two_ranks) == tree(one_rank)
        ours, theirs = records(two_ranks), records(one_rank)
        # The first generation's population is the same (same seed). Its fitness differs only because
        # each training step's BatchNorm statistics come from 16 images per process instead of 32; on this
        # tiny model that moves a fitness by at most a few of the 64 held-out images.
        def by_index(record):
            return {p['index']: p for p in record['population']}
        mine, single = by_index(ours[0]), by_index(theirs[0])
        assert mine.keys() == single.keys()
        for index in mine:
            assert mine[index]['alphas'] == single[index]['alphas']
            assert abs(mine[index]['fitness'] - single[index]['fitness']) <= 100 * 4 / 64, (index, mine, single)

    def test_only_rank_zero_writes_and_every_rank_held_the_same_population(self, two_ranks):
        log = open(os.path.join(two_ranks, 'log.txt')).read()
        assert 'x 2 processes' in log
        assert log.count('gen   1/2 |') == 1
        # rank 0 measured individuals 1 and 3 of 4 (i = 0, 2); rank 1 the others, which rank 0 did not log
        assert 'fitness   1/  4' in log and 'fitness   3/  4' in log and 'fitness   2/  4' not in log
        for record in records(two_ranks):
            assert all(p['fitness'] is not None for p in record['population'])


class TestElasticRestart:
    def test_a_dead_rank_stops_the_job_and_the_restart_resumes_from_the_checkpoint(self, two_ranks, tmp_path):
        run_dir = str(tmp_path / 'run')
        done = torchrun(*ARGS, '--run_dir', run_dir, extra=['--max_restarts=1'],
                        env={'EVNAS_FAULT': 'kill@eval:2:1', 'EVNAS_FAULT_RANK': '1'})
        assert done.returncode == 0, done.stderr[-3000:]
        log = open(os.path.join(run_dir, 'log.txt')).read()
        assert 'resumed after generation 1 of 2' in log
        assert records(run_dir) == records(two_ranks), 'the restarted job ends where an uninterrupted one ends'

    def test_without_restarts_a_dead_rank_fails_the_job_clearly(self, tmp_path):
        run_dir = str(tmp_path / 'run')
        done = torchrun(*ARGS, '--run_dir', run_dir, env={'EVNAS_FAULT': 'kill@train:1:0', 'EVNAS_FAULT_RANK': '1'})
        assert done.returncode != 0
        assert 'train_search.py FAILED' in done.stderr and 'Signal 9 (SIGKILL)' in done.stderr


    def test_a_rank_out_of_memory_says_so_with_its_rank_and_no_rank_hangs(self, tmp_path):
        run_dir = str(tmp_path / 'run')
        done = torchrun(*ARGS, '--run_dir', run_dir, env={'EVNAS_FAULT': 'oom@eval:2:1', 'EVNAS_FAULT_RANK': '1'},
                        timeout=300)
        assert done.returncode != 0
        assert not any(line.startswith('[rank') and 'Traceback' in line for line in done.stderr.splitlines())
        lines = [line for line in done.stderr.splitlines() if 'out of memory' in line]
        assert len(lines) == 1 and lines[0].startswith('stopped (rank 1): out of memory in the fitness evaluation')
        assert 'exitcode  : 2' in done.stderr and 'the checkpoint after generation 1' in lines[0]


class TestSyncBatchNorm:
    def test_training_gets_sync_batchnorms_and_fitness_keeps_the_model_without_them(self, monkeypatch):
        # --sync_bn: the module the training step calls synchronises BatchNorm statistics; the supernet the search
        # keeps (and calls for fitness, where ranks score different individuals) holds no SyncBatchNorm, and both
        # share every tensor. DDP itself needs a process group; here it is replaced by the module it wraps.
        import torch

        import speed
        from architect_evolution import darts_shapes, decode, random_individual
        from model_search import Network
        from runtime import devices
        monkeypatch.setattr(torch.nn.parallel, 'DistributedDataParallel', lambda module, **kwargs: module)
        model = Network(4, 10, 3, impl=speed.layers(speed.PAPER_EXACT))
        trained = devices.wrap(model, devices.Distributed(rank=0, world_size=2), torch.device('cuda', 0), True)
        is_sync = lambda m: isinstance(m, torch.nn.SyncBatchNorm)  # noqa: E731
        assert any(map(is_sync, trained.modules())) and not any(map(is_sync, model.modules()))
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == \
            sum(map(is_sync, trained.modules()))
        ours, theirs = dict(model.named_parameters()), dict(trained.named_parameters())
        assert ours.keys() == theirs.keys() and all(ours[k] is theirs[k] for k in ours)
        assert all(a is b for a, b in zip(model.buffers(), trained.buffers()))
        alphas = decode(random_individual(darts_shapes(4), torch.Generator().manual_seed(0)).alphas)
        model.set_arch_parameters(alphas)
        assert torch.equal(trained.alphas_normal, alphas[0]), 'the copy runs the alphas the search sets'
        assert model.state_dict().keys() == trained.state_dict().keys()


RESCORE = '''
import sys, json, torch
sys.path.insert(0, sys.argv[1])
import trust, report, train_search
from search import random_search
from architect_evolution import Individual
from search.budget import Budget
run_args = trust.search_run_args(sys.argv[2])
side = trust.SupernetSide(sys.argv[2], run_args, torch.device("cpu"))
records = report.read_records(sys.argv[2])
last = records[-1]["population"]
alphas = [[torch.tensor(p["alphas"][c]) for c in side.space.cells] for p in last]
measured = side.score(side.settings.fitness, alphas, [p["fitness_seed"] for p in last])
budget = Budget.of(side.settings.budget, side.space, side.data.train.num_classes)
orders = []
for record in records:  # each generation ranked again from its fitness, in the order it was trained
    population = sorted(record["population"], key=lambda p: p["index"])
    individuals = [Individual([torch.tensor(p["alphas"][c]) for c in side.space.cells], fitness=p["fitness"])
                   for p in population]
    orders.append(train_search.rank_population(individuals, budget)[1])
shared = random_search.read(sys.argv[2])  # a random-strategy run: every draw scored again at its end
rescored = None if shared is None else side.score(
    side.settings.fitness, [[torch.tensor(s["alphas"][c]) for c in side.space.cells] for s in shared["scored"]],
    [s["fitness_seed"] for s in shared["scored"]])
print(json.dumps({"measured": measured, "recorded": [p["fitness"] for p in last], "orders": orders,
                  "weight_sharing": None if shared is None else [s["fitness"] for s in shared["scored"]],
                  "weight_sharing_measured": rescored}))
'''


def in_one_process(run_dir):
    """The last generation scored again in one process with the run's final weights and recorded fitness seeds
    (trust.py's SupernetSide), and every generation's ranking worked out again from its records."""
    done = subprocess.run([sys.executable, '-c', RESCORE, ROOT, run_dir], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


NB201_TINY = ['--space', 'nb201', '--dataset', 'synthetic', '--synthetic_size', '128', '--init_channels', '4',
              '--num_cells', '1', '--tsize', '2', '--batch_size', '32', '--valid_batch_size', '64', '--device', 'cpu',
              '--report_freq', '1']


@pytest.mark.parametrize('argv', [
    # 3 individuals over 2 ranks: rank 0 scores two, rank 1 one
    pytest.param(SEARCH_TINY + ['--epochs', '1', '--pop_size', '3'], id='darts-uneven'),
    # NAS-Bench-201: eval-mode fitness on rank 0's running statistics, 5 individuals over 2 ranks
    pytest.param(NB201_TINY + ['--epochs', '2', '--pop_size', '5', '--track_running_stats'], id='nb201'),
    # a budget: ranked by constraint domination from costs each rank measures (about half fit at 3M parameters)
    pytest.param(SEARCH_TINY + ['--epochs', '2', '--pop_size', '4', '--max_params', '3'], id='darts-budget'),
    # the random strategy (no --tsize: it runs no tournament), its weight-sharing scores shared by the ranks too
    pytest.param(without_flag(SEARCH_TINY, '--tsize') + ['--epochs', '2', '--strategy', 'random'], id='darts-random'),
    pytest.param(without_flag(NB201_TINY, '--tsize')
                 + ['--epochs', '2', '--pop_size', '5', '--track_running_stats', '--strategy', 'random'],
                 id='nb201-random'),
])
def test_two_processes_record_what_one_process_measures_and_ranks(argv, tmp_path):
    # Every fitness of the last generation is what one process measures with the same weights and seeds, and every
    # generation is ranked as one process ranks it; the elites open the next generation.
    run_dir = str(tmp_path / 'run')
    done = torchrun(*argv, '--run_dir', run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    one = in_one_process(run_dir)
    assert one['measured'] == one['recorded'] and len(one['recorded']) == train_search.parse_args(argv).pop_size
    recorded = records(run_dir)
    for record, order in zip(recorded, one['orders']):
        assert [p['index'] for p in record['population']] == order
    if '--strategy' in argv:
        assert one['weight_sharing_measured'] == one['weight_sharing'] and len(one['weight_sharing']) > 0
        return
    for before, after in zip(recorded, recorded[1:]):
        assert after['population'][[p['index'] for p in after['population']].index(0)]['alphas'] == \
            before['population'][0]['alphas'], 'the elite is the best of the generation before'
    if '--max_params' in argv:
        assert all('feasible' in p and p['feasible'] == (p['params'] <= 3e6) for r in recorded for p in r['population'])
        assert 0 < recorded[0]['feasible'] < 4, 'the budget splits the first generation'
