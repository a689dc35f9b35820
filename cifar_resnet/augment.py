"""Training-time augmentation, batched on the device, random per image.

The paper's pad-and-crop with flips is always on. The modern recipe's parts are off by default:
ColorJitter (before normalisation), RandomErasing (after it), and MixUp/CutMix (on the batch and
its labels, in the training step). torchvision's v2 transforms draw one set of parameters per
call, so on a batch every image would get the same jitter or erased box; these draw one per
image, with torchvision's ranges. MixUp and CutMix draw one lambda per batch, as timm's batch
mode and torchvision's v2.MixUp/CutMix do.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PAD = 4  # pixels of zero padding around each image before the random crop (Sec. 4.2)
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
ERASE_AREA = (0.02, 1 / 3)  # torchvision RandomErasing's scale (Zhong et al. 2017)
ERASE_LOG_ASPECT = (math.log(0.3), math.log(3.3))  # its ratio, drawn log-uniformly
ERASE_ATTEMPTS = 10  # torchvision tries 10 boxes and erases nothing if none fits
CUTMIX_SWITCH_PROB = 0.5  # with both alphas set, CutMix on half the batches (timm's switch_prob)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = PAD) -> torch.Tensor:
    """Pad each image by ``pad`` zeros, take a random crop of the original size, flip half of them.

    One gather does crop and flip for the whole batch: output column j of a flipped image
    reads padded column dx + (W - 1 - j).
    """
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (batch, 1), device=device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (batch, 1), device=device, generator=generator)
    flip = torch.rand(batch, 1, device=device, generator=generator) < 0.5
    rows = dy + torch.arange(height, device=device)
    columns = torch.arange(width, device=device)
    columns = dx + torch.where(flip, width - 1 - columns, columns)
    return padded[
        torch.arange(batch, device=device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows[:, None, :, None],
        columns[:, None, None, :],
    ]


def uniform_factors(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """One factor per image, uniform in [1 - strength, 1 + strength], shaped to broadcast."""
    noise = torch.rand(len(images), 1, 1, 1, device=images.device, generator=generator)
    return 1 + strength * (2 * noise - 1)


def grey(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(GREY_WEIGHTS, device=images.device, dtype=images.dtype)
    return torch.einsum("bchw,c->bhw", images, weights).unsqueeze(1)


def color_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """torchvision's ColorJitter(brightness=s, contrast=s, saturation=s) with its own factors for
    each image, on float pixels in [0, 255]. The order is fixed (brightness, contrast, saturation);
    torchvision shuffles it per call. Each step blends with a reference and clamps, as torchvision does."""
    images = (images * uniform_factors(images, strength, generator)).clamp_(0, 255)  # blend with black
    factor = uniform_factors(images, strength, generator)
    mean_grey = grey(images).mean(dim=(2, 3), keepdim=True)
    images = (factor * images + (1 - factor) * mean_grey).clamp_(0, 255)
    factor = uniform_factors(images, strength, generator)
    return (factor * images + (1 - factor) * grey(images)).clamp_(0, 255)


def random_erasing(images: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomErasing(p) with value 0 (the mean, after normalisation), a box of its own
    for each image: area 2%-33% of the image, aspect ratio 0.3-3.3 (log-uniform), the first of 10
    draws that fits inside the image, none if none fits."""
    batch, _, height, width = images.shape
    device = images.device
    shape = (batch, ERASE_ATTEMPTS)
    area = height * width * torch.empty(shape, device=device).uniform_(*ERASE_AREA, generator=generator)
    aspect = torch.empty(shape, device=device).uniform_(*ERASE_LOG_ASPECT, generator=generator).exp_()
    box_h, box_w = (area * aspect).sqrt().round().long(), (area / aspect).sqrt().round().long()
    fits = (box_h < height) & (box_w < width)
    first = fits.long().argmax(dim=1, keepdim=True)  # the first attempt that fits (0 if none does)
    box_h, box_w = box_h.gather(1, first), box_w.gather(1, first)
    erase = fits.any(dim=1, keepdim=True) & (torch.rand(batch, 1, device=device, generator=generator) < probability)
    top = (torch.rand(batch, 1, device=device, generator=generator) * (height - box_h + 1)).long()
    left = (torch.rand(batch, 1, device=device, generator=generator) * (width - box_w + 1)).long()
    rows, columns = torch.arange(height, device=device), torch.arange(width, device=device)
    inside_rows = (rows >= top) & (rows < top + box_h)  # batch x H
    inside_columns = (columns >= left) & (columns < left + box_w)  # batch x W
    mask = inside_rows[:, :, None] & inside_columns[:, None, :] & erase[:, :, None]
    return images.masked_fill(mask[:, None], 0)


@dataclass(frozen=True)
class Augmentation:
    """The per-image augmentation of a training loader: the paper's crop and flip, then the
    optional jitter (on pixels) and erasing (on normalised images)."""

    color_jitter: float = 0.0
    random_erasing: float = 0.0

    def on_pixels(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = random_crop_flip(images, generator)
        if self.color_jitter:
            images = color_jitter(images.float(), self.color_jitter, generator)
        return images

    def on_normalized(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_erasing(images, self.random_erasing, generator) if self.random_erasing else images


class Mixing:
    """MixUp (Zhang et al. 2018) or CutMix (Yun et al. 2019) on every batch: one lambda per batch,
    each image mixed with its neighbour in the (already shuffled) batch, soft targets.

    With both alphas set, each batch gets one of the two, CutMix with probability 0.5. The
    per-batch draws come from a Python generator of their own, on the host, so no step waits for
    the device; its state is part of a checkpoint.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, classes: int, seed: int) -> None:
        self.mixup_alpha, self.cutmix_alpha, self.classes = mixup_alpha, cutmix_alpha, classes
        self.random = random.Random(seed)

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed batch and its targets (batch x classes, each row summing to 1)."""
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or self.random.random() < CUTMIX_SWITCH_PROB)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = self.random.betavariate(alpha, alpha)
        partners = images.roll(1, dims=0)
        if use_cutmix:
            images, lam = self.cut_and_paste(images, partners, lam)
        else:
            images = torch.lerp(partners, images, lam)
        one_hot = F.one_hot(labels, self.classes).float()
        return images, lam * one_hot + (1 - lam) * one_hot.roll(1, dims=0)

    def cut_and_paste(self, images: torch.Tensor, partners: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
        """Paste a box of about (1 - lam) of the area from the partners; the box is clipped at the
        border, so lam is recomputed from the area really pasted (as timm and torchvision do)."""
        height, width = images.shape[-2:]
        cut = math.sqrt(1 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        centre_y, centre_x = self.random.randrange(height), self.random.randrange(width)
        top, bottom = max(centre_y - cut_h // 2, 0), min(centre_y + cut_h // 2, height)
        left, right = max(centre_x - cut_w // 2, 0), min(centre_x + cut_w // 2, width)
        images = images.clone()
        images[..., top:bottom, left:right] = partners[..., top:bottom, left:right]
        return images, 1 - (bottom - top) * (right - left) / (height * width)

    def state_dict(self) -> dict:
        version, internal, gauss_next = self.random.getstate()
        return {"version": version, "internal": list(internal), "gauss_next": gauss_next}

    def load_state_dict(self, state: dict) -> None:
        """Raises ValueError or TypeError where ``state`` is not a generator's state."""
        self.random.setstate((state["version"], tuple(state["internal"]), state["gauss_next"]))
