"""The batch-wise augmentation draws from the same distributions as the per-image torchvision pipeline of
DARTS/EvNAS, and gives each image what the per-image transforms give it with the same random choices."""
import pytest
import torch

import utils
from inputs import augmentation
from inputs.augmentation import apply_augment, augment_batch, draw_augment, pad_images
from inputs.data import make_synthetic
from inputs.loaders import PerImageLoader, TensorLoader
from runtime.settings import Augment


def _coordinate_image(size=32):
    """A uint8 image whose pixels encode their coordinates, so a crop or a flip shows in every pixel."""
    rows = torch.arange(size)[:, None].expand(size, size)
    cols = torch.arange(size)[None, :].expand(size, size)
    return torch.stack([rows * 7 + 20, cols * 7 + 20, (rows + cols) * 3 + 10]).to(torch.uint8)


class TestAugmentationDistributions:
    N = 3000

    def _per_image(self, cutout):
        image = _coordinate_image()
        array = make_synthetic(True, self.N)
        array.images[:] = image
        torch.manual_seed(0)  # the per-image transforms draw from the global stream
        loader = PerImageLoader(array, 500, augment=Augment(cutout_length=cutout), num_workers=0)
        return torch.cat([x for x, _ in loader]), array

    @pytest.mark.parametrize('cutout', [0, 16])
    def test_pixel_means_and_spreads_match_torchvision(self, cutout):
        reference, array = self._per_image(cutout)
        ours = augment_batch(array.images, array.mean, array.std, Augment(cutout_length=cutout),
                             utils.make_generator(3))
        # Each pixel's mean and standard deviation over 3000 augmented copies: the two pipelines differ only
        # by sampling noise (a few percent of the spread), never by a shifted or missing case.
        spread = reference.std(0).mean()
        assert (ours.mean(0) - reference.mean(0)).abs().mean() < 0.05 * spread
        assert (ours.std(0) - reference.std(0)).abs().mean() < 0.05 * spread
        # zero-padding shows as the normalised value of a 0 pixel; cutout as exact zeros
        padded = (-torch.tensor(array.mean) / torch.tensor(array.std)).view(3, 1, 1)
        def frac(t):
            return (t == padded).all(1).float().mean().item()
        assert frac(ours) == pytest.approx(frac(reference), abs=0.01)
        if cutout:
            def zeros(t):
                return (t == 0).all(1).float().mean().item()
            assert zeros(ours) == pytest.approx(zeros(reference), abs=0.01)
            assert zeros(ours) > 0.1

    @pytest.mark.parametrize('cutout', [0, 16, 9])
    @pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
    def test_each_image_equals_the_per_image_transforms_with_the_same_choices(self, cutout, memory_format):
        # The same crop offset, flip and cutout centre applied image by image with torchvision's functional
        # transforms and EvNAS's Cutout box (clipped at the border) give the batch-wise result to float rounding.
        import torchvision.transforms.functional as TF
        array = make_synthetic(True, 64)
        mean, std = array.mean, array.std
        augment = Augment(cutout_length=cutout)
        params = draw_augment(64, 32, 32, augment, utils.make_generator(7))
        if cutout:  # boxes clipped at every border
            params['cy'][:4], params['cx'][:4] = torch.tensor([0, 31, 5, 20]), torch.tensor([31, 0, 20, 5])
        ours = apply_augment(pad_images(array.images, 4), 32, 32, params, mean, std, augment, memory_format)
        assert ours.is_contiguous(memory_format=memory_format)
        for b in range(64):
            img = TF.to_pil_image(array.images[b])
            img = TF.crop(TF.pad(img, 4), int(params['dy'][b]), int(params['dx'][b]), 32, 32)
            if params['flip'][b]:
                img = TF.hflip(img)
            x = TF.normalize(TF.to_tensor(img), mean, std)
            if cutout:
                y, xc, half = int(params['cy'][b]), int(params['cx'][b]), cutout // 2
                x[:, max(y - half, 0):min(y + half, 32), max(xc - half, 0):min(xc + half, 32)] = 0.
            assert torch.allclose(ours[b], x, atol=1e-5), b

    def test_crop_offsets_and_flips_are_uniform(self):
        image = _coordinate_image()[None].expand(4000, 3, 32, 32)
        out = augment_batch(image, (0., 0., 0.), (1 / 255, 1 / 255, 1 / 255), Augment(), utils.make_generator(4))
        # pixel (16, 16) reads row 16 + dy - 4; its column says whether the image was flipped
        rows = ((out[:, 0, 16, 16] - 20) / 7).round() - 16 + 4
        assert set(rows.long().tolist()) == set(range(9))
        counts = torch.bincount(rows.long(), minlength=9).float() / len(rows)
        assert (counts - 1 / 9).abs().max() < 0.03
        cols_left = ((out[:, 1, 16, 0] - 20) / 7).round()
        cols_right = ((out[:, 1, 16, 31] - 20) / 7).round()
        flipped = (cols_left > cols_right).float().mean().item()
        assert flipped == pytest.approx(0.5, abs=0.04)

    def test_same_generator_state_same_batches(self):
        array = make_synthetic(True, 100)
        a = [x for x, _ in TensorLoader(array, 32, shuffle=True, augment=Augment(cutout_length=16),
                                        generator=utils.make_generator(5))]
        b = [x for x, _ in TensorLoader(array, 32, shuffle=True, augment=Augment(cutout_length=16),
                                        generator=utils.make_generator(5))]
        assert all(torch.equal(p, q) for p, q in zip(a, b))

    def test_shards_of_two_ranks_make_up_the_single_process_batch(self):
        array = make_synthetic(True, 50)
        def make(rank, world):
            return list(TensorLoader(array, 16, shuffle=True, augment=Augment(cutout_length=8),
                                     generator=utils.make_generator(6), rank=rank, world_size=world))
        single, r0, r1 = make(0, 1), make(0, 2), make(1, 2)
        assert len(single) == len(r0) == len(r1) == 4
        for (x, y), (x0, y0), (x1, y1) in zip(single, r0, r1):
            assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_generated_dataset_is_deterministic_and_learnable_shaped():
    a, b = make_synthetic(True, 64, seed=0), make_synthetic(True, 64, seed=0)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (64, 3, 32, 32) and a.images.dtype == torch.uint8
    assert not torch.equal(make_synthetic(False, 64).images, a.images)


def test_the_unaugmented_loader_makes_its_normalisation_tensors_once(monkeypatch):
    # On a GPU, a mean or std list copied to the device for every batch makes the host wait each time.
    array = make_synthetic(True, 40, image_size=8)
    loader = TensorLoader(array, 8)
    expected = [augmentation.normalize(array.images[i:i + 8], array.mean, array.std) for i in range(0, 40, 8)]
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, 'tensor', lambda *a, **k: made.append(a) or real(*a, **k))
    batches = [x for x, _ in loader] + [x for x, _ in loader]
    assert len(made) == 2, 'mean and std, once for every batch of every pass'
    assert all(torch.equal(x, y) for x, y in zip(batches, expected * 2))
