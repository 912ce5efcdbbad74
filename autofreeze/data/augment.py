"""Random augmentation of training images: a searchable policy, applied online per batch or
drawn once as a fixed set of cached views.

Policies (``[search] augment``, or ``[training] augment`` for every plan):

- ``none``: the images as they are;
- ``flip``: a horizontal flip of a random half;
- ``crop``: random-resized-crop (scale 0.35..1, the aspect 3/4..4/3) and the flip;
- ``trivial``: ``crop`` then TrivialAugment (one random colour or geometric operation of random
  strength per image; Müller & Hutter 2021), torchvision's v2 transforms.

They run on batches of uint8 images before normalisation, on the device the batch trains on,
each image with its own random parameters drawn from the trial's generator, so a run is the
same under the same seed. Validation images are never augmented.

Online: every training batch is augmented afresh, so no frozen work below the first augmented
input can be cached. Cached views (``[training] cached_views = N``): each training image gets
``N`` augmented views drawn once from a seed of their own (the same for every trial of the
study) and every epoch draws one of them per image; the frozen prefix is then a fixed function
of (image, view) and its outputs are cached like those of unaugmented images (see
:mod:`autofreeze.cache.activations`), at ``N`` times the memory.

Mixup and CutMix (``[training] mixup`` / ``cutmix``: the Beta distribution's alpha) mix the
images of a batch and their labels; they run after the policy, always online.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from typing import Literal, get_args

import torch

from autofreeze.data.tensors import TensorSplit

Policy = Literal["none", "flip", "crop", "trivial"]
POLICIES: tuple[str, ...] = get_args(Policy)
CROP_SCALE = (0.35, 1.0)


def view_generator(seed: int, view: int) -> torch.Generator:
    """The generator of view ``view``: the same views for every trial of a study's seed."""
    return torch.Generator().manual_seed(seed * 1_000_003 + view)


@cache
def _transform(policy: str, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    from torchvision.transforms import v2

    steps = [
        v2.RandomResizedCrop(size, scale=CROP_SCALE, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if policy == "trivial":
        steps.append(v2.TrivialAugmentWide())
    return v2.Compose(steps)


def augment_batch(
    x: torch.Tensor, generator: torch.Generator, policy: str = "flip"
) -> torch.Tensor:
    """Augment the batch ``x`` (N x C x H x W; uint8 images, or float ones for ``flip`` and
    ``crop``) in place by ``policy``, drawing from ``generator``."""
    if policy == "none":
        return x
    if policy == "flip":
        flip = torch.rand(len(x), generator=generator) < 0.5
        x[flip.to(x.device)] = x[flip.to(x.device)].flip(-1)
        return x
    transform = _transform(policy, x.shape[-1])
    seeds = torch.randint(2**62, (len(x),), generator=generator).tolist()
    devices = [x.device] if x.device.type == "cuda" else []
    for i, seed in enumerate(seeds):
        with torch.random.fork_rng(devices=devices):  # v2 transforms draw from torch's RNG
            torch.manual_seed(seed)
            x[i] = transform(x[i])
    return x


def view_batches(
    split: TensorSplit, batch_size: int, view: int, seed: int, policy: str
) -> Iterator[torch.Tensor]:
    """View ``view`` of every image of ``split``, in order and normalised, ``batch_size`` at a
    time. Each image's draw depends on the view, the seed and its index only, so a view is the
    same however its images are batched."""
    n = len(split)
    generator = view_generator(seed, view)
    if policy == "flip":
        mask = torch.rand(n, generator=generator) < 0.5
    else:
        seeds = torch.randint(2**62, (n,), generator=generator)
    for start in range(0, n, batch_size):
        x = split.rows(slice(start, min(n, start + batch_size))).clone()  # not the split's own
        if policy == "flip":
            flip = mask[start : start + len(x)]
            x[flip] = x[flip].flip(-1)
        elif policy != "none":
            per_image = torch.Generator()
            for i in range(len(x)):
                per_image.manual_seed(int(seeds[start + i]))
                augment_batch(x[i : i + 1], per_image, policy)
        yield split.prepare(x)


def pick_views(
    idx: torch.Tensor, n_images: int, views: int, generator: torch.Generator
) -> torch.Tensor:
    """Rows of a view-major stack (view ``v`` of image ``i`` at ``v * n_images + i``) that give
    images ``idx`` one view each, drawn at random."""
    if views <= 1:
        return idx
    return torch.randint(views, (len(idx),), generator=generator) * n_images + idx


def mix(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    mixup: float = 0.0,
    cutmix: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (one of the two with alpha > 0, at random) of a normalised batch and its
    labels: soft labels (N x classes) for the loss."""
    from torchvision.transforms import v2

    choices = [t for t, a in ((v2.MixUp, mixup), (v2.CutMix, cutmix)) if a > 0]
    alphas = [a for a in (mixup, cutmix) if a > 0]
    if not choices:
        return x, y
    pick = int(torch.randint(len(choices), (), generator=generator))
    transform = choices[pick](alpha=alphas[pick], num_classes=num_classes)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(torch.randint(2**62, (), generator=generator)))
        return transform(x, y)
