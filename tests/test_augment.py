"""The batched, per-image augmentation of augment.py: what each does to one image, and that the
images of one batch get draws of their own."""

import pytest
import torch

from cifar_resnet.augment import Augmentation, Mixing, color_jitter, random_crop_flip, random_erasing


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_random_crop_flip_gives_a_shifted_and_possibly_mirrored_copy_of_each_image():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    flips, shifts = 0, set()
    for image, result in zip(padded, out):
        candidates = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                      if torch.equal(result, (lambda crop: crop.flip(2) if flip else crop)(image[:, dy:dy + 32, dx:dx + 32]))]
        assert candidates, "an output is not a crop of its padded image"
        flips += candidates[0][2]
        shifts.add(candidates[0][:2])
    assert 16 < flips < 48  # about half are mirrored
    assert len(shifts) > 20  # offsets vary over the 9 x 9 choices


def erased_boxes(before, after):
    """Per image: the erased pixels' mask (H x W), checked to be the same in every channel."""
    masks = (after != before)
    assert torch.equal(masks, masks[:, :1].expand_as(masks))
    return masks[:, 0]


def test_random_erasing_gives_each_image_its_own_box_of_the_documented_size_and_shape():
    images = torch.randn(1, 3, 32, 32).add_(5).expand(256, -1, -1, -1).contiguous()  # no pixel is 0 before
    boxes = erased_boxes(images, random_erasing(images, 1.0, generator()))
    areas = []
    for mask in boxes:
        rows, columns = mask.any(dim=1).nonzero().squeeze(1), mask.any(dim=0).nonzero().squeeze(1)
        assert len(rows), "with p=1 every image has a box (some attempt of 10 nearly always fits)"
        height, width = int(rows[-1] - rows[0] + 1), int(columns[-1] - columns[0] + 1)
        assert int(mask.sum()) == height * width  # one filled rectangle
        assert 0.3 / 1.2 <= height / width <= 3.3 * 1.2  # rounding to whole pixels bends the ratio a little
        areas.append(height * width / 1024)
    assert min(areas) >= 0.015 and max(areas) <= 0.36
    assert len({tuple(mask.flatten().tolist()) for mask in boxes}) > 200  # the boxes differ between images


def test_random_erasing_erases_about_p_of_the_images_and_nothing_at_p_0():
    images = torch.ones(1000, 3, 8, 8)
    erased = (random_erasing(images, 0.25, generator()) == 0).flatten(1).any(dim=1).float().mean()
    assert 0.2 < erased < 0.3
    assert torch.equal(random_erasing(images, 0.0, generator()), images)


def test_color_jitter_draws_factors_per_image_and_stays_in_pixel_range():
    image = torch.randint(0, 256, (1, 3, 32, 32)).float()
    batch = image.expand(64, -1, -1, -1).contiguous()
    jittered = color_jitter(batch, 0.4, generator())
    assert jittered.min() >= 0 and jittered.max() <= 255
    assert len({tuple(row.flatten()[:50].tolist()) for row in jittered}) == 64  # 64 different results
    assert torch.allclose(color_jitter(batch, 0.0, generator()), batch, atol=1e-3)  # strength 0: unchanged


def test_color_jitter_brightness_alone_scales_each_image_by_one_factor_in_range():
    """A grey image keeps its grey under contrast and saturation (both blend with grey), so only
    the brightness factor shows: every pixel of an image is scaled by the same factor in [0.6, 1.4]."""
    grey = torch.full((128, 3, 4, 4), 100.0)
    factors = color_jitter(grey, 0.4, generator())[:, 0, 0, 0] / 100
    assert torch.allclose(color_jitter(grey, 0.4, generator()), factors[:, None, None, None] * grey, atol=1e-3)
    assert factors.min() >= 0.6 - 1e-4 and factors.max() <= 1.4 + 1e-4 and factors.std() > 0.1


def test_augmentation_off_is_exactly_the_paper_s_crop_and_flip():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(Augmentation().on_pixels(images, generator(3)), random_crop_flip(images, generator(3)))
    normalised = torch.randn(16, 3, 32, 32)
    assert Augmentation().on_normalized(normalised, generator()) is normalised


def numbered_batch(batch=8, size=32):
    """Image i is filled with the value i, so every pixel says which image it came from."""
    return torch.arange(batch, dtype=torch.float32)[:, None, None, None].expand(batch, 3, size, size).contiguous()


@pytest.mark.parametrize("seed", range(20))
def test_cutmix_pastes_one_box_from_the_neighbour_whose_area_matches_lambda(seed):
    images, labels = numbered_batch(), torch.arange(8) % 10
    mixed, targets = Mixing(0.0, 1.0, 10, seed=seed)(images, labels)
    assert torch.allclose(targets.sum(dim=1), torch.ones(8))
    lam = float(targets[0, labels[0]])  # image 0's share of its own label
    for index in range(8):
        from_partner = (mixed[index] == (index - 1) % 8).float().mean()  # roll(1): image i takes image i-1's box
        assert from_partner == pytest.approx(1 - lam, abs=1e-6)
        assert torch.isin(mixed[index], torch.tensor([index, (index - 1) % 8], dtype=torch.float32)).all()
        assert float(targets[index, labels[index]]) == pytest.approx(lam)
        assert float(targets[index, labels[(index - 1) % 8]]) == pytest.approx(1 - lam)


def test_mixup_blends_each_image_with_its_neighbour_by_the_targets_lambda():
    images, labels = numbered_batch(), torch.arange(8)
    mixed, targets = Mixing(1.0, 0.0, 10, seed=1)(images, labels)
    lam = float(targets[0, 0])
    assert 0 < lam < 1 and torch.allclose(targets.sum(dim=1), torch.ones(8))
    expected = lam * images + (1 - lam) * images.roll(1, dims=0)
    assert torch.allclose(mixed, expected, atol=1e-5)


def test_mixup_and_cutmix_together_use_each_on_about_half_the_batches():
    images, labels = numbered_batch(), torch.arange(8)
    mixing = Mixing(1.0, 1.0, 10, seed=0)
    kinds = []
    for _ in range(200):
        mixed, _ = mixing(images, labels)
        kinds.append(bool(torch.isin(mixed, images).all()))  # CutMix only copies pixels; MixUp blends them
    assert 70 < sum(kinds) < 130


def test_mixing_state_restores_the_same_draws():
    images, labels = numbered_batch(), torch.arange(8)
    mixing = Mixing(0.8, 1.0, 10, seed=5)
    mixing(images, labels)
    saved = mixing.state_dict()
    expected = [mixing(images, labels)[1] for _ in range(3)]
    restored = Mixing(0.8, 1.0, 10, seed=99)
    restored.load_state_dict(saved)
    assert all(torch.equal(restored(images, labels)[1], target) for target in expected)
