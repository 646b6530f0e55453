"""gpu_check.py at tiny sizes on the CPU, so that the GPU's first command cannot rot unseen."""
import json

import pytest
import torch

import gpu_check
from conftest import call_main


def test_the_small_mode_checks_agreement_and_writes_its_report(tmp_path):
    report = gpu_check.main(gpu_check.parse_args(['--small', '--device', 'cpu', '--out', str(tmp_path)]))
    fast = report['agreement']['fast']
    assert fast['failed'] == [] and fast['figures']['logits'] < 1e-4, 'the CPU defaults compute the paper-exact step'
    bf16 = report['agreement']['bf16']
    assert bf16['failed'] == [] and bf16['figures']['logits'] > 0, 'bf16 differs from float32, within its tolerance'
    assert bf16['paper_exact_bf16']['gradients'] > 0
    assert -1 <= report['ranking']['kendall_tau_b'] <= 1
    assert report['determinism']['same_bits'] is True
    assert report['cost_per_step']['operators'] > 0
    assert report['speed']['projected_search_hours'] > 0
    written = json.load(open(tmp_path / 'gpu_check.json'))
    assert written['device']['device'] == 'cpu' and written['mode'] == 'small'
    text = open(tmp_path / 'gpu_check.md').read()
    assert '| fast |' in text and 'Kendall tau-b' in text and 'the same bits' in text


def test_a_check_past_its_tolerance_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, 'BF16_MARGIN', 0.)
    monkeypatch.setitem(gpu_check.TOLERANCE, 'fast', {'logits': 0., 'loss': 0., 'gradients': 0., 'fitness_logits': 0.})
    # the other sections are measured above; only the verdict is under test here
    monkeypatch.setattr(gpu_check, 'bf16_ranking', lambda device, sizes: {'fitness': {'float32': [1.]},
                                                                           'kendall_tau_b': 1.})
    monkeypatch.setattr(gpu_check, 'cost_per_step', lambda device, sizes: {})
    monkeypatch.setattr(gpu_check, 'determinism', lambda device, sizes: {'same_bits': True})
    monkeypatch.setattr(gpu_check, 'timing', lambda device, sizes: {'projection': 'none'})
    with pytest.raises(SystemExit) as stopped:
        call_main(gpu_check, ['--small', '--device', 'cpu', '--out', tmp_path])
    assert stopped.value.code == 1
    assert 'agreement outside its tolerance (fast: logits' in capsys.readouterr().err


def test_the_compiled_fitness_network_computes_the_eager_logits():
    # --full's compiled fitness row, traced by Dynamo without inductor's code generation (minutes on a CPU).
    # two layers: half the graph for Dynamo to trace
    result = gpu_check.compiled_fitness(torch.device('cpu'), {**gpu_check.SMALL, 'layers': 2}, backend='eager')
    assert result['max_logit_difference'] < 1e-5
    assert result['first_call_seconds'] > result['compiled_seconds_per_batch'] > 0, 'the first call traces'
    assert result['speedup'] == pytest.approx(result['eager_seconds_per_batch'] / result['compiled_seconds_per_batch'])
