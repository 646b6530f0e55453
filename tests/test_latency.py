"""Latency budgets: the parts a network runs against the network itself, the predictor's sum against
hand-worked tables, a table built and checked at tiny sizes, damaged and foreign tables refused, and a
latency-budgeted search (records, report, its copy of the table, killed and resumed bit for bit)."""
import json
import os
import re

import pytest
import torch

import export
import latency_table
import train_search
import utils
from architect_evolution import init_population
from conftest import call_main, run_script, without_timings
from genotypes import EvNASA, Genotype
from genotypes_nb201 import parse_arch
from model import NetworkCIFAR, NetworkImageNet
from model_search_nb201 import ArchCell, ResNetBasicblock
from model_search_nb201 import Network as NB201Network
from runtime.settings import SupernetSettings
from search import latency
from search.latency import LatencyTable, Network, TableError, all_parts, network_parts
from search_space import DARTS, NB201

TINY = ['--dataset', 'synthetic', '--synthetic_size', '128', '--init_channels', '4', '--layers', '3',
        '--pop_size', '4', '--tsize', '2', '--batch_size', '32', '--valid_batch_size', '64', '--device', 'cpu']
TINY_TABLE_NETWORK = Network('darts', 'cifar', 2, 3, 8, 10)
TARGET = {'device': 'cpu', 'device_name': 'the machine of the test', 'runtime': 'eager', 'torch': '2.0',
          'threads': 1, 'batch_size': 1}
# milliseconds by operation in the hand-made tables (the fixed parts get 0.5)
OP_MS = {'max_pool_3x3': .25, 'avg_pool_3x3': .375, 'skip_connect': .0625, 'sep_conv_3x3': 1., 'sep_conv_5x5': 1.5,
         'dil_conv_3x3': .75, 'dil_conv_5x5': 1.125, 'nor_conv_1x1': .5, 'nor_conv_3x3': 1.25}


def hand_table(path, network=TINY_TABLE_NETWORK, overhead=0., target=TARGET, ms=None) -> LatencyTable:
    """A table written by hand: each part's latency from `ms(part)` (default OP_MS, 0.5 for the fixed parts)."""
    ms = ms or (lambda part: OP_MS.get(part.name.split()[0], .5))
    table = LatencyTable(network, dict(target), {p.key: {'ms': ms(p), 'p10': 0., 'p90': 9., 'repeats': 1}
                                                 for p in all_parts(network)}, overhead)
    with open(path, 'w') as f:
        json.dump(table.to_json(), f)
    return LatencyTable.read(str(path))


def _random_architectures(space, count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [space.genotype(ind.alphas)
            for ind in init_population(count, space.alpha_shapes(SupernetSettings()), generator)]


# ----------------------------------------------------------------------------------------------------------
# The parts of a network

def _called_parts(model, space, image_size):
    """(module, (C, H, W) it read) of every part the network's forward calls, in call order."""
    if space == 'darts':
        wanted = [m for name, m in model.named_modules() if name in ('stem', 'stem0', 'stem1')
                  or name.rsplit('.', 1)[-1] in ('preprocess0', 'preprocess1') or re.search(r'\._ops\.\d+$', name)]
        head = model.global_pooling
    else:
        wanted = [model.stem] + [m for m in model.modules() if isinstance(m, ResNetBasicblock)]
        wanted += [op for cell in model.cells if isinstance(cell, ArchCell) for op in cell.edges.values()]
        head = model.lastact
    calls = []
    hooks = [m.register_forward_hook(lambda m, inputs, out: calls.append((m, tuple(inputs[0].shape[1:]))))
             for m in wanted + [head]]
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size, device='meta'))
    for hook in hooks:
        hook.remove()
    return calls, head


@pytest.mark.parametrize('space, size', [('darts', 'cifar'), ('darts', 'imagenet'), ('nb201', 'cifar'),
                                         ('nb201', 'imagenet')])
def test_the_parts_are_what_the_network_runs(space, size):
    """Every part named, in forward order, is a module of the evaluation network's own structure (its repr:
    channels, kernels, strides) reading the shape the part says."""
    network = {'darts': Network(space, size, 4, 5, 32, 10), 'nb201': Network(space, size, 4, 1, 16, 7)}[space]
    for architecture in _random_architectures(DARTS if space == 'darts' else NB201, 3):
        with torch.device('meta'):
            if space == 'darts':
                cls = NetworkImageNet if size == 'imagenet' else NetworkCIFAR
                model = cls(network.init_channels, 10, network.layers, False, architecture)
            else:
                model = NB201Network(network.init_channels, network.layers, 7, arch=parse_arch(architecture))
        calls, head = _called_parts(model.eval(), space, network.image_size)
        parts, cells = network_parts(network, architecture)
        assert cells == (network.layers if space == 'darts' else 3 * network.layers)
        assert [shape for _, shape in calls] == [p.shape for p in parts]
        for (module, _), part in zip(calls[:-1], parts[:-1]):
            assert repr(module) == repr(part.make()), part.key
        assert calls[-1][0] is head and parts[-1].name.startswith('head')
        assert {p.key for p in parts} <= {p.key for p in all_parts(network)}


def test_the_predictor_sums_a_hand_worked_table(tmp_path):
    """DARTS, C=2, 3 layers, 8x8: a normal cell, then two reduction cells, worked out by hand."""
    table = hand_table(tmp_path / 't.json', overhead=.125)
    genotype = Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('max_pool_3x3', 2), ('sep_conv_5x5', 0),
                                ('dil_conv_3x3', 3), ('avg_pool_3x3', 1), ('skip_connect', 4), ('dil_conv_5x5', 2)],
                        normal_concat=[2, 3, 4, 5],
                        reduce=[('max_pool_3x3', 0), ('sep_conv_3x3', 1), ('skip_connect', 2), ('dil_conv_5x5', 0),
                                ('avg_pool_3x3', 1), ('sep_conv_5x5', 3), ('dil_conv_3x3', 4), ('skip_connect', 0)],
                        reduce_concat=[2, 3, 4, 5])
    parts, cells = network_parts(TINY_TABLE_NETWORK, genotype)
    assert [p.key for p in parts] == [
        'stem to 6 3x8x8',
        'relu_conv_bn to 2 6x8x8', 'relu_conv_bn to 2 6x8x8', 'sep_conv_3x3 s1 2x8x8', 'skip_connect s1 2x8x8',
        'max_pool_3x3 s1 2x8x8', 'sep_conv_5x5 s1 2x8x8', 'dil_conv_3x3 s1 2x8x8', 'avg_pool_3x3 s1 2x8x8',
        'skip_connect s1 2x8x8', 'dil_conv_5x5 s1 2x8x8',
        'relu_conv_bn to 4 6x8x8', 'relu_conv_bn to 4 8x8x8', 'max_pool_3x3 s2 4x8x8', 'sep_conv_3x3 s2 4x8x8',
        'skip_connect s1 4x4x4', 'dil_conv_5x5 s2 4x8x8', 'avg_pool_3x3 s2 4x8x8', 'sep_conv_5x5 s1 4x4x4',
        'dil_conv_3x3 s1 4x4x4', 'skip_connect s2 4x8x8',
        'factorized_reduce to 8 8x8x8', 'relu_conv_bn to 8 16x4x4', 'max_pool_3x3 s2 8x4x4', 'sep_conv_3x3 s2 8x4x4',
        'skip_connect s1 8x2x2', 'dil_conv_5x5 s2 8x4x4', 'avg_pool_3x3 s2 8x4x4', 'sep_conv_5x5 s1 8x2x2',
        'dil_conv_3x3 s1 8x2x2', 'skip_connect s2 8x4x4',
        'head 10 classes 32x2x2']
    # fixed parts: stem, 6 preprocessings, head: 8 x 0.5. The normal cell's edges: 1 + .0625 + .25 + 1.5 + .75 +
    # .375 + .0625 + 1.125 = 5.125; each reduction cell's the same operations, so 5.125 too. Overhead: 3 x .125.
    assert cells == 3
    assert table.predict(genotype) == 19.75
    assert table.sum_of_parts(genotype) == (19.375, 3)


def test_the_predictor_sums_a_hand_worked_nb201_table(tmp_path):
    network = Network('nb201', 'cifar', 2, 1, 8, 10)
    table = hand_table(tmp_path / 't.json', network, overhead=.25)
    arch = '|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|none~2|'
    parts, cells = network_parts(network, arch)
    assert [p.key for p in parts] == [
        'stem to 2 3x8x8', 'nor_conv_3x3 2x8x8', 'skip_connect 2x8x8', 'avg_pool_3x3 2x8x8',
        'resblock to 4 2x8x8', 'nor_conv_3x3 4x4x4', 'skip_connect 4x4x4', 'avg_pool_3x3 4x4x4',
        'resblock to 8 4x4x4', 'nor_conv_3x3 8x2x2', 'skip_connect 8x2x2', 'avg_pool_3x3 8x2x2',
        'head 10 classes 8x2x2']
    assert table.predict(arch) == 4 * .5 + 3 * (1.25 + .0625 + .375) + 3 * .25


def test_onnxruntime_tables_leave_out_what_the_output_does_not_read(tmp_path):
    network = Network('nb201', 'cifar', 2, 1, 8, 10)
    eager = hand_table(tmp_path / 'e.json', network)
    ort = hand_table(tmp_path / 'o.json', network, target={**TARGET, 'runtime': 'onnxruntime'})
    # node 2 feeds nothing: eager PyTorch computes its avg_pool_3x3 (.375) in each of the 3 stages, ONNX Runtime
    # removes it; DARTS concatenates every node, so nothing is removed there
    arch = '|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|none~2|'
    assert eager.predict(arch) - ort.predict(arch) == 3 * .375
    assert latency.live_edges(['nor_conv_3x3', 'none', 'none', 'skip_connect', 'none', 'none']) == \
        ['none', 'none', 'none', 'skip_connect', 'none', 'none']
    genotype = _random_architectures(DARTS, 1)[0]
    assert hand_table(tmp_path / 'd.json', target={**TARGET, 'runtime': 'onnxruntime'}).predict(genotype) == \
        hand_table(tmp_path / 'f.json').predict(genotype)


def test_an_operation_outside_the_table_is_one_line(tmp_path):
    table = hand_table(tmp_path / 't.json')
    seven = EvNASA._replace(normal=[('sep_conv_7x7', 0)] + list(EvNASA.normal[1:]))
    with pytest.raises(TableError, match="no 'sep_conv_7x7 s1 2x8x8'"):
        table.predict(seven)


# ----------------------------------------------------------------------------------------------------------
# Building and checking a table

@pytest.fixture(scope='module')
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp('latency')
    threads = str(torch.get_num_threads())
    argv = ['--space', 'darts', '--init_channels', '2', '--layers', '3', '--image_size', '8', '--repeats', '3',
            '--calibration', '3', '--threads', threads, '--out', root / 'table.json']
    assert call_main(latency_table, argv) == 0
    assert call_main(latency_table, ['--check', root / 'table.json', '--archs', '4', '--repeats', '3',
                                     '--out', root / 'check.json']) == 0
    return root


def test_a_tiny_table_is_built_with_every_part_and_its_spread(built):
    data = json.load(open(built / 'table.json'))
    assert data['format'] == latency.FORMAT and data['network'] == TINY_TABLE_NETWORK.__dict__
    target = data['target']
    assert (target['device'], target['runtime'], target['batch_size'], target['torch']) == \
        ('cpu', 'eager', 1, torch.__version__)
    assert target['threads'] == torch.get_num_threads() and target['warmup'] == 5 and target['repeats'] == 3
    assert set(data['parts']) == {p.key for p in all_parts(TINY_TABLE_NETWORK)}
    for entry in data['parts'].values():
        assert 0 < entry['p10'] <= entry['ms'] <= entry['p90'] and entry['repeats'] == 3
    table = LatencyTable.read(str(built / 'table.json'))
    overheads = sorted((c['measured_ms'] - c['sum_of_parts_ms']) / c['cells'] for c in data['calibration'])
    assert len(overheads) == 3 and data['cell_overhead_ms'] == overheads[1]  # the median
    for c in data['calibration']:
        assert c['cells'] == 3 and c['measured_ms'] > 0
    architecture = DARTS.genotype(init_population(1, DARTS.alpha_shapes(SupernetSettings()),
                                                  torch.Generator().manual_seed(0))[0].alphas)
    # the first calibration network is the first architecture of --seed 0's stream
    assert data['calibration'][0]['sum_of_parts_ms'] == table.sum_of_parts(architecture)[0]


def test_the_check_holds_out_the_calibration_and_reports_the_figures(built):
    result = json.load(open(built / 'check.json'))
    table = LatencyTable.read(str(built / 'table.json'))
    calibrated = {c['architecture'] for c in table.calibration}
    assert len(result['rows']) == 4 and not calibrated & {r['architecture'] for r in result['rows']}
    assert result['table_sha256'] == table.sha256 and result['differs'] is None
    for row in result['rows']:
        assert row['predicted_ms'] == pytest.approx(row['sum_of_parts_ms'] + 3 * table.cell_overhead_ms)
        assert len(row['measured_ms']) == 2 and min(row['measured_ms']) > 0 and row['macs'] > 0
    for key in ('spearman_predicted', 'spearman_sum_of_parts', 'spearman_macs'):
        assert len(result[key]) == 2 and all(-1 <= r <= 1 for r in result[key])
    assert -1 <= result['spearman_retest'] <= 1 and result['mape_predicted'] >= 0


def test_onnxruntime_times_what_eager_computes():
    pytest.importorskip('onnxruntime')
    part = next(p for p in all_parts(TINY_TABLE_NETWORK) if p.name == 'sep_conv_3x3 s2')
    module = part.make().eval()
    x = torch.randn(1, *part.shape)
    ort = latency.runner(module, x, 'onnxruntime', 1)
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(ort()[0]), module(x), atol=1e-5)
    times = latency.time_calls(ort, 3)
    assert len(times) == 3 and min(times) > 0


def _damaged(path):
    path.write_text('{"format": "evnas-latency-table", "version": 1, "network"')


def _foreign(path):
    path.write_text(json.dumps({'sep_conv_3x3': 1.0}))


def _other_version(path):
    data = json.load(open(path))
    path.write_text(json.dumps({**data, 'version': 99}))


def _not_finite(path):
    data = json.load(open(path))
    next(iter(data['parts'].values()))['ms'] = float('nan')
    path.write_text(json.dumps(data))


def _sizes_as_text(path):
    data = json.load(open(path))
    data['network']['image_size'] = '8'
    path.write_text(json.dumps(data))


def _missing_part(path):
    data = json.load(open(path))
    del data['parts']['sep_conv_5x5 s2 4x8x8']
    path.write_text(json.dumps(data))


@pytest.mark.parametrize('spoil, message', [(_damaged, 'is damaged: not JSON'),
                                            (_foreign, 'is not a latency table of this project'),
                                            (_other_version, 'has version 99'),
                                            (_not_finite, 'no finite latency'),
                                            (_sizes_as_text, 'are not positive whole numbers'),
                                            (_missing_part, "lacks 1 part(s)")])
def test_a_damaged_or_foreign_table_is_refused_in_one_line(spoil, message, tmp_path, capsys):
    hand_table(tmp_path / 't.json')
    spoil(tmp_path / 't.json')
    argv = TINY + ['--max_latency', '5', '--latency_table', tmp_path / 't.json', '--run_dir', tmp_path / 'run']
    assert call_main(train_search, argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) <= 2 and not (tmp_path / 'run').exists()
    assert call_main(latency_table, ['--check', tmp_path / 't.json']) == 2
    assert message in capsys.readouterr().err
    assert call_main(export, ['--arch', 'EvNASA', '--model_path', 'w.pt', '--latency',
                              '--latency_table', tmp_path / 't.json']) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize('argv, message', [
    (['--max_latency', '5'], '--max_latency MS needs --latency_table FILE'),
    (['--latency_table', '{table}'], 'needs --max_latency'),
    (['--max_latency', '0', '--latency_table', '{table}'], '--max_latency must be positive'),
    (['--max_latency', '5', '--latency_table', '{table}', '--budget_size', 'imagenet'],
     'is for the darts space at the cifar size'),
    (['--max_latency', '5', '--latency_table', '{nb201}'], 'is for the nb201 space'),
])
def test_latency_flags_are_checked_before_any_work(argv, message, tmp_path, capsys):
    hand_table(tmp_path / 't.json')
    hand_table(tmp_path / 'n.json', Network('nb201', 'cifar', 2, 1, 8, 10))
    argv = [a.format(table=tmp_path / 't.json', nb201=tmp_path / 'n.json') for a in argv]
    assert call_main(train_search, TINY + argv + ['--run_dir', tmp_path / 'run']) == 2
    assert message in capsys.readouterr().err and not (tmp_path / 'run').exists()


def test_a_table_changed_after_the_command_line_was_read_is_refused(tmp_path):
    from runtime.settings import BudgetSettings
    from search.budget import Budget
    table = hand_table(tmp_path / 't.json')
    settings = BudgetSettings(max_latency=5., latency_table=str(tmp_path / 't.json'), latency_table_sha256=table.sha256)
    assert Budget.of(settings, DARTS, 10).table.sha256 == table.sha256
    hand_table(tmp_path / 't.json', overhead=1.)
    with pytest.raises(TableError, match='changed after the command line was read'):
        Budget.of(settings, DARTS, 10)


def test_a_table_of_other_classes_is_refused(tmp_path, capsys):
    hand_table(tmp_path / 't.json', Network('darts', 'cifar', 2, 3, 8, 100))
    argv = TINY + ['--epochs', '1', '--max_latency', '5', '--latency_table', tmp_path / 't.json',
                   '--run_dir', tmp_path / 'run']
    assert call_main(train_search, argv) == 2
    err = capsys.readouterr().err
    assert 'is for 100 classes' in err and '--num_classes 10' in err and not (tmp_path / 'run').exists()


# ----------------------------------------------------------------------------------------------------------
# A latency-budgeted search

@pytest.fixture(scope='module')
def budgeted(tmp_path_factory):
    """A search whose latency limit is the median of its first generation's predicted latencies (drawn as the
    search draws them), so that about half of it fits."""
    root = tmp_path_factory.mktemp('latency_search')
    table = hand_table(root / 'table.json')
    first = init_population(4, DARTS.alpha_shapes(SupernetSettings()), utils.make_generator(2))
    predicted = sorted(table.predict(DARTS.genotype(ind.alphas)) for ind in first)
    limit = (predicted[1] + predicted[2]) / 2
    argv = TINY + ['--seed', '2', '--epochs', '2', '--max_latency', str(limit), '--latency_table', root / 'table.json']
    assert call_main(train_search, argv + ['--run_dir', root / 'run']) == 0
    return root, argv, limit, table


def _records(run_dir):
    paths = sorted(os.listdir(os.path.join(run_dir, 'generations')))
    return [without_timings(json.load(open(os.path.join(run_dir, 'generations', p)))) for p in paths]


def test_the_records_log_and_report_show_the_predicted_latency(budgeted):
    root, _, limit, table = budgeted
    run_dir = root / 'run'
    records = _records(run_dir)
    assert 0 < records[0]['feasible'] < 4
    for record in records:
        for individual in record['population']:
            genotype = Genotype(**individual['genotype'])
            assert individual['latency_ms'] == table.predict(genotype)
            assert individual['feasible'] == (individual['latency_ms'] <= limit)
        assert record['population'][0]['feasible'] and record['best_latency_ms'] == \
            record['population'][0]['latency_ms']
    assert open(run_dir / latency.RUN_COPY, 'rb').read() == open(root / 'table.json', 'rb').read()
    assert json.load(open(run_dir / 'args.json'))['latency_table_sha256'] == table.sha256
    log = open(run_dir / 'log.txt').read()
    assert f"| best's latency {records[-1]['best_latency_ms']:.2f} ms |" in log
    assert 'ms predicted for the darts space\'s network at the cifar size (C=2, 3 layers, 8x8' in log
    text = open(run_dir / 'report.md').read()
    assert f"At most {limit:g} ms predicted latency" in text
    assert 'fitness against latency' in text and '| latency (ms) |' in text
    assert f"- Latency: {records[-1]['population'][0]['latency_ms']:.2f} ms predicted" in text


def test_a_latency_budgeted_search_killed_and_resumed_ends_bit_exact(budgeted, tmp_path, capsys):
    root, argv, _, _ = budgeted
    killed = tmp_path / 'run'
    done = run_script('train_search.py', *map(str, argv), '--run_dir', str(killed),
                      env={'EVNAS_FAULT': 'kill@eval:2:1'})
    assert done.returncode == -9, done.stderr
    other = hand_table(tmp_path / 'other.json', overhead=1.)
    assert call_main(train_search, ['--resume', killed, '--latency_table', tmp_path / 'other.json']) == 2
    assert 'is not the table the run searched with' in capsys.readouterr().err
    copy = killed / latency.RUN_COPY
    original = copy.read_bytes()
    copy.write_bytes(original.replace(b'"cell_overhead_ms": 0.0', b'"cell_overhead_ms": 0.5'))
    assert call_main(train_search, ['--resume', killed]) == 2
    assert 'changed since the run began' in capsys.readouterr().err
    copy.write_bytes(original)
    moved = tmp_path / 'moved.json'
    moved.write_bytes(original)
    assert other.sha256 != LatencyTable.read(str(moved)).sha256
    assert call_main(train_search, ['--resume', killed, '--latency_table', moved]) == 0
    assert _records(killed) == _records(root / 'run')
    assert (killed / 'genotype.json').read_text() == (root / 'run' / 'genotype.json').read_text()


# ----------------------------------------------------------------------------------------------------------
# A trained network's export

def test_export_sets_the_prediction_beside_the_measurement(tmp_path, capsys):
    network = Network('darts', 'cifar', 4, 3, 32, 10)
    table = hand_table(tmp_path / 't.json', network, overhead=.25)
    torch.manual_seed(0)
    torch.save(NetworkCIFAR(4, 10, 3, True, EvNASA).state_dict(), tmp_path / 'weights.pt')
    assert call_main(export, ['--arch', 'EvNASA', '--model_path', tmp_path / 'weights.pt', '--init_channels', '4',
                              '--layers', '3', '--out', tmp_path / 'out', '--latency', '--repeats', '2',
                              '--latency_table', tmp_path / 't.json']) == 0
    info = json.load(open(tmp_path / 'out' / 'export.json'))
    predicted = info['latency']['predicted']
    assert predicted['predicted_ms'] == table.predict(EvNASA)
    assert predicted['measured_ms'] == info['latency']['eager']['batch_1_ms_per_image'] > 0
    assert info['latency']['threads'] == torch.get_num_threads()
    # the table says it was built on another machine with another torch: one line says so
    differs = predicted['differs']
    assert 'built on another target than this measurement' in differs
    assert 'device the machine of the test vs' in differs and 'torch version 2.0 vs' in differs
    printed = capsys.readouterr()
    assert sum('built on another target' in line for line in (printed.out + printed.err).splitlines()) == 1
    hand_table(tmp_path / 'small.json', Network('darts', 'cifar', 2, 3, 8, 10))
    assert call_main(export, ['--arch', 'EvNASA', '--model_path', tmp_path / 'weights.pt', '--init_channels', '4',
                              '--layers', '3', '--out', tmp_path / 'out2', '--latency', '--repeats', '2',
                              '--latency_table', tmp_path / 'small.json']) == 0
    skipped = json.load(open(tmp_path / 'out2' / 'export.json'))['latency']['predicted']['skipped']
    assert 'C=2, 3 layers, 8x8' in skipped and 'C=4, 3 layers, 32x32' in skipped
