"""Random augmentation of training images, online per batch or as a fixed set of cached views.

Online (``[training] augment = true``): every training batch is augmented afresh (a horizontal
flip of a random half), so no frozen work below the first augmented input can be cached.

Cached views (``[training] cached_views = N`` with ``augment``): each training image gets ``N``
augmented views drawn once, from a seed of their own, and every epoch draws one of them per
image. The frozen prefix is then a fixed function of (image, view) and its outputs are cached
like those of unaugmented images (see :mod:`autofreeze.cache`): ``N`` times the cached memory,
and the trial sees ``N`` variations of each image instead of a new one every epoch.
"""

from __future__ import annotations

import torch

POLICY = "hflip"  # what augment_batch does: part of every cache key of augmented views


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip a random half of the batch ``x`` (N x C x H x W) horizontally, in place."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    x[flip.to(x.device)] = x[flip.to(x.device)].flip(-1)
    return x


def view_generator(seed: int, view: int) -> torch.Generator:
    """The generator of view ``view``: the same views for every trial of a study's seed."""
    return torch.Generator().manual_seed(seed * 1_000_003 + view)


def augmented_view(x: torch.Tensor, view: int, seed: int) -> torch.Tensor:
    """View ``view`` of every image of ``x`` (a copy; ``x`` is left as it is)."""
    return augment_batch(x.clone(), view_generator(seed, view))


def pick_views(
    idx: torch.Tensor, n_images: int, views: int, generator: torch.Generator
) -> torch.Tensor:
    """Rows of a view-major stack (view ``v`` of image ``i`` at ``v * n_images + i``) that give
    images ``idx`` one view each, drawn at random."""
    if views <= 1:
        return idx
    return torch.randint(views, (len(idx),), generator=generator) * n_images + idx
