"""bench.py is a benchmark, not a test: here only its plumbing is checked, on tiny sizes."""
import json

import pytest

import bench


def test_spearman_known_answers():
    assert bench.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1
    assert bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1
    assert bench.spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)


def test_projection_of_the_full_search():
    results = {'supernet_train': {'fast': {'images_per_sec': 25000 / 3600}},
               'fitness': {'fast': {'images_per_sec': 50 * 25000 / 3600}}}
    assert bench.projected_search_hours(results, 'fast') == pytest.approx(2 * 50)


def test_quick_run_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    bench.main(bench.parse_args(['--quick', '--device', 'cpu', '--only', 'supernet_train,fitness,augment',
                                 '--warmup', '0', '--repeats', '1', '--in_process', '--json', str(out)]))
    table = capsys.readouterr().out
    assert 'fast/exact' in table and 'supernet_train img/s' in table and 'projected full search' in table
    results = json.load(open(out))['results']
    for name in ('supernet_train', 'fitness', 'augment'):
        assert results[name]['paper_exact']['images_per_sec'] > 0 and results[name]['fast']['images_per_sec'] > 0
