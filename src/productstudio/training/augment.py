"""Differentiable augmentation (Zhao et al. 2020) applied to real and fake images before the discriminator.

Every random draw comes from the caller's torch.Generator (on the CPU, then moved: the same numbers on any
device), so a resumed run repeats it exactly.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

POLICIES = ("color", "translation", "cutout")


def brightness_contrast(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = len(x)
    shift = (torch.rand(n, 1, 1, 1, generator=g).to(x.device) - 0.5) * 0.5
    scale = torch.rand(n, 1, 1, 1, generator=g).to(x.device) + 0.5
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * scale + mean + shift


def translation(x: torch.Tensor, g: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio of its size, filling with the background (-1)."""
    n, _, h, w = x.shape
    pad = max(1, int(h * ratio + 0.5))
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    shifted = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])[:, None, None, :].expand(n, x.shape[1], h, w)
    return shifted.gather(3, cols)


def cutout(x: torch.Tensor, g: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n,), generator=g).to(x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n,), generator=g).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys - cy[:, None, None]).abs() <= ch // 2) & ((xs - cx[:, None, None]).abs() <= cw // 2)
    return x * (~inside)[:, None].to(x.dtype)


def diff_augment(x: torch.Tensor, policy: list[str], g: torch.Generator) -> torch.Tensor:
    for name in policy:
        if name == "color":
            x = brightness_contrast(x, g)
        elif name == "translation":
            x = translation(x, g)
        elif name == "cutout":
            x = cutout(x, g)
        else:
            raise ValueError(f"unknown augmentation {name!r} (known: {', '.join(POLICIES)})")
    return x
