import json
import os

import pytest
import torch

import genotypes
import speed
import utils
from conftest import FIXTURES, ROOT
from model import AuxiliaryHeadImageNet, NetworkCIFAR, NetworkImageNet, drop_path
from model_search import Network
from runtime.checkpoint import load_weights_file


@pytest.fixture(scope='module')
def manifest():
    with open(os.path.join(FIXTURES, 'state_dict_manifest.json')) as f:
        return json.load(f)


def _build(entry: str):
    dataset, arch = entry.split('/')
    if dataset == 'search':
        return Network(16, 10, 8)
    if dataset == 'imagenet':
        return NetworkImageNet(48, 1000, 14, True, genotypes.get_genotype(arch))
    return NetworkCIFAR(36, 100 if dataset == 'cifar100' else 10, 20, True, genotypes.get_genotype(arch))


ENTRIES = ['cifar10/EvNASA', 'cifar10/EvNASB', 'cifar10/EvNASC', 'cifar100/EvNASA', 'cifar100/EvNASB',
           'cifar100/EvNASC', 'imagenet/EvNASA', 'imagenet/EvNASB', 'imagenet/EvNASC', 'search/C16L8']


class TestStateDictManifest:
    @pytest.mark.parametrize('entry', ENTRIES)
    def test_keys_and_shapes_equal_the_original(self, manifest, entry):
        ours = {k: list(v.shape) for k, v in _build(entry).state_dict().items()}
        theirs = manifest[entry]
        assert sorted(set(theirs) - set(ours)) == [], 'keys the original has and we lack'
        assert sorted(set(ours) - set(theirs)) == [], 'keys we have and the original lacks'
        assert ours == theirs

    def test_every_network_of_the_manifest_is_checked(self, manifest):
        assert sorted(manifest) == sorted(ENTRIES)

    def test_the_fast_defaults_build_the_same_keys_and_shapes(self, manifest):
        impl = speed.layers(speed.default_config(torch.device('cpu')))
        for entry, model in (('cifar10/EvNASA', NetworkCIFAR(36, 10, 20, True, genotypes.EvNASA, impl=impl)),
                             ('imagenet/EvNASB', NetworkImageNet(48, 1000, 14, True, genotypes.EvNASB, impl=impl)),
                             ('search/C16L8', Network(16, 10, 8, impl=impl))):
            assert {k: list(v.shape) for k, v in model.state_dict().items()} == manifest[entry]

    def test_the_copy_in_the_repository_equals_the_shared_fixture(self, manifest):
        shared = os.path.join(ROOT, '..', 'shared', 'fixtures', 'state_dict_manifest.json')
        if not os.path.exists(shared):
            pytest.skip('no ../shared beside this checkout')
        with open(shared) as f:
            assert json.load(f) == manifest


@pytest.fixture(scope='module')
def eval_reference():
    return torch.load(os.path.join(FIXTURES, 'eval_reference.pt'), weights_only=True)


SETTINGS = {'paper_exact': speed.PAPER_EXACT, 'cpu_defaults': speed.default_config(torch.device('cpu'))}


class TestAgainstTheOriginalCode:
    """The original EvNAS NetworkCIFAR (EvNAS-A/B/C) and NetworkImageNet (EvNAS-B), at C=6 with 8 and 4 layers,
    ran in eval mode on a fixed input with random weights: our networks, built as test_cifar.py and
    test_imagenet.py build them, load those weights strictly and give the same logits. State_dict keys and
    shapes alone cannot tell cells wired in another order, or their outputs concatenated in another order."""

    @pytest.mark.parametrize('setting', SETTINGS)
    @pytest.mark.parametrize('entry', ['cifar/EvNASA', 'cifar/EvNASB', 'cifar/EvNASC', 'imagenet/EvNASB'])
    def test_logits_equal_the_originals(self, eval_reference, entry, setting):
        reference = eval_reference[entry]
        c = reference['config']
        config = SETTINGS[setting]
        network = NetworkImageNet if entry.startswith('imagenet') else NetworkCIFAR
        model = network(c['C'], c['num_classes'], c['layers'], c['auxiliary'], genotypes.get_genotype(c['arch']),
                        impl=speed.layers(config))
        load_weights_file(model, reference['state_dict'], entry)
        model.to(memory_format=config.memory_format).eval()
        with torch.no_grad():
            logits, _ = model(reference['x'].contiguous(memory_format=config.memory_format))
        expected = reference['eval_logits']
        assert (logits - expected).abs().max().item() < 1e-5
        # The logits differ between the images and between the classes (a constant output would pass as well).
        assert expected.std().item() > 1e-2

    def test_the_reference_covers_every_published_cell(self, eval_reference):
        assert {k for k in eval_reference if '/' in k} == {'cifar/EvNASA', 'cifar/EvNASB', 'cifar/EvNASC',
                                                          'imagenet/EvNASB'}

    def test_the_copy_in_the_repository_equals_the_shared_fixture(self):
        shared = os.path.join(ROOT, '..', 'shared', 'fixtures', 'eval_reference.pt')
        if not os.path.exists(shared):
            pytest.skip('no ../shared beside this checkout')
        with open(shared, 'rb') as a, open(os.path.join(FIXTURES, 'eval_reference.pt'), 'rb') as b:
            assert a.read() == b.read()


class TestParameterCounts:
    @pytest.mark.parametrize('arch, count', [('EvNASA', 3_626_470), ('EvNASB', 3_827_782), ('EvNASC', 3_447_838)])
    def test_cifar10_c36_l20(self, arch, count):
        model = NetworkCIFAR(36, 10, 20, True, genotypes.get_genotype(arch))
        assert round(utils.count_parameters_in_MB(model) * 1e6) == count

    @pytest.mark.parametrize('arch, count', [('EvNASA', 5_136_640), ('EvNASB', 5_318_176), ('EvNASC', 4_907_776)])
    def test_imagenet_c48_l14(self, arch, count):
        model = NetworkImageNet(48, 1000, 14, True, genotypes.get_genotype(arch))
        assert round(utils.count_parameters_in_MB(model) * 1e6) == count


class TestEvaluationNetworks:
    def test_cifar_forward_with_auxiliary_in_training_only(self):
        model = NetworkCIFAR(4, 10, 5, True, genotypes.EvNASA)
        model.drop_path_prob = 0.2
        x = torch.randn(2, 3, 32, 32)
        model.train()
        logits, aux = model(x)
        assert logits.shape == (2, 10) and aux.shape == (2, 10)
        model.eval()
        logits, aux = model(x)
        assert logits.shape == (2, 10) and aux is None

    def test_imagenet_forward(self):
        model = NetworkImageNet(8, 7, 3, False, genotypes.EvNASB).eval()
        logits, aux = model(torch.randn(2, 3, 64, 64))
        assert logits.shape == (2, 7) and aux is None

    def test_imagenet_auxiliary_head_has_no_batchnorm_after_2x2_conv(self):
        layers = [type(m).__name__ for m in AuxiliaryHeadImageNet(16, 10).features]
        assert layers == ['ReLU', 'AvgPool2d', 'Conv2d', 'BatchNorm2d', 'ReLU', 'Conv2d', 'ReLU']

    def test_every_published_genotype_builds_and_runs(self):
        for name in genotypes.ARCHITECTURES:
            model = NetworkCIFAR(4, 10, 3, False, genotypes.get_genotype(name)).eval()
            assert model(torch.randn(1, 3, 16, 16))[0].shape == (1, 10)


class TestDropPath:
    def test_keeps_or_zeroes_whole_samples_and_rescales(self):
        torch.manual_seed(0)
        x = torch.ones(2000, 2, 3, 3)
        y = drop_path(x, 0.2)
        per_sample = y.flatten(1)
        assert set(per_sample.unique().tolist()) <= {0.0, 1.25}
        assert (per_sample.min(1).values == per_sample.max(1).values).all()
        assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.2) < 0.03
        assert torch.equal(x, torch.ones_like(x)), 'the input must not be modified in place'

    def test_follows_the_input_device_and_dtype(self):
        x = torch.ones(4, 1, 2, 2, device='meta', dtype=torch.float64)
        y = drop_path(x, 0.5)
        assert y.device.type == 'meta' and y.dtype == torch.float64

    def test_zero_probability_is_identity(self):
        x = torch.randn(3, 2, 2, 2)
        assert drop_path(x, 0.0) is x
