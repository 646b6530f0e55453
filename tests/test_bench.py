"""bench.py is a benchmark, not a test: here only its plumbing is checked, on tiny sizes."""
import json

import pytest
import torch

import bench
import speed


def test_spearman_known_answers():
    assert bench.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1
    assert bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1
    assert bench.spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)


def test_projection_of_the_full_search():
    results = {'supernet_train': {'fast': {'images_per_sec': 25000 / 3600}},
               'fitness': {'fast': {'images_per_sec': 50 * 25000 / 3600}}}
    assert bench.projected_search_hours(results, 'fast') == pytest.approx(2 * 50)


def test_rounds_give_medians_and_the_median_of_each_rounds_ratio():
    exact = bench.over_rounds([{'images_per_sec': 1., 'peak_mb': 50.}, {'images_per_sec': 2., 'peak_mb': 70.}])
    fast = bench.over_rounds([{'images_per_sec': 3., 'peak_mb': 40.}, {'images_per_sec': 8., 'peak_mb': 30.}])
    assert exact['images_per_sec'] == 1.5 and exact['peak_mb'] == 70. and len(exact['rounds']) == 2
    # Round ratios 3 and 4: their median, not the ratio of the medians (5.5 / 1.5).
    assert bench.speedup({'paper_exact': exact, 'fast': fast}, 'images_per_sec') == 3.5
    generation = {'paper_exact': bench.over_rounds([{'seconds_per_generation': 9.}, {'seconds_per_generation': 12.}]),
                  'fast': bench.over_rounds([{'seconds_per_generation': 3.}, {'seconds_per_generation': 3.}])}
    assert bench.speedup(generation, 'seconds_per_generation') == 3.5  # times: exact / fast
    assert bench.over_rounds([{'images_per_sec': 5.}]) == {'images_per_sec': 5.}


def test_quick_run_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    bench.main(bench.parse_args(['--quick', '--device', 'cpu', '--only', 'supernet_train,fitness,augment',
                                 '--warmup', '0', '--repeats', '1', '--in_process', '--json', str(out)]))
    table = capsys.readouterr().out
    assert 'fast/exact' in table and 'supernet_train img/s' in table
    assert 'projected full search' not in table, '--quick sizes say nothing about the paper\'s search'
    results = json.load(open(out))['results']
    for name in ('supernet_train', 'fitness', 'augment'):
        assert results[name]['paper_exact']['images_per_sec'] > 0 and results[name]['fast']['images_per_sec'] > 0


def test_quick_run_in_rounds(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    bench.main(bench.parse_args(['--quick', '--device', 'cpu', '--only', 'fitness', '--warmup', '0', '--repeats', '1',
                                 '--rounds', '2', '--in_process', '--json', str(out)]))
    assert 'fitness img/s' in capsys.readouterr().out
    saved = json.load(open(out))
    assert saved['meta']['rounds'] == 2
    assert [len(saved['results']['fitness'][v]['rounds']) for v in ('paper_exact', 'fast')] == [2, 2]
    assert saved['speedups']['fitness']['fast'] > 0


def test_ablation_measures_each_default_setting_off_alone(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    bench.main(bench.parse_args(['--quick', '--device', 'cpu', '--only', 'fitness', '--warmup', '0', '--repeats', '1',
                                 '--ablate', '--in_process', '--json', str(out)]))
    table = capsys.readouterr().out
    assert 'what each setting earns' in table
    saved = json.load(open(out))
    on = [name for name in speed.SETTINGS if getattr(speed.default_config(torch.device('cpu')), name)
          and name not in speed.PROCESS_SETTINGS]  # in one process, malloc's setting cannot be undone
    assert set(saved['results']['fitness']) == {'paper_exact', 'fast'} | {f'no_{name}' for name in on}
    assert saved['meta']['configs']['no_channels_last'] == speed.default_config(torch.device('cpu')).without(
        'channels_last').describe()
    for name in on:
        assert f'{name} ' in table.split('what each setting earns')[1]
