"""What a generator is fed, in one place: latents drawn from seeds, categories in turn, generated batches,
sample grids.

Two ways of drawing latents, each kept exactly as the artifacts made with it:
- a *stream*: one ``torch.Generator`` seeded once, batch after batch, categories in turn (0, 1, ...,
  C-1, 0, ...): evaluate, quantize (its comparison and its int8 calibration), promote and the KID curve
  use it, so two models are compared on identical inputs;
- *per image*: image i from its own seed (``latents_from_seeds``): serving and the MLflow model, so any
  single image can be made again alone, whatever batch it was in.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from productstudio.imaging import to_uint8, to_uint8_array

GRID_COLUMNS = 8


def latent_batches(config, count: int, seed: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(z, y) batches on the CPU: ``count`` latents from one stream seeded ``seed``, categories in turn."""
    rng = torch.Generator().manual_seed(seed)
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        z = torch.randn(n, config.latent_dim, generator=rng)
        y = torch.arange(start, start + n) % config.num_classes
        yield z, y


def example_inputs(config, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of latents and categories (the first of ``latent_batches``)."""
    return next(latent_batches(config, batch, seed, batch))


def generated_batches(generator, count: int, seed: int, batch_size: int, device) -> Iterator[np.ndarray]:
    """uint8 images (B, C, H, W) of ``latent_batches``: the same inputs for every model."""
    with torch.inference_mode():
        for z, y in latent_batches(generator.config, count, seed, batch_size):
            yield to_uint8_array(generator(z.to(device), y.to(device)))


def generated_labels(count: int, num_classes: int) -> np.ndarray:
    """The categories of ``count`` generated images (in turn)."""
    return np.arange(count) % num_classes


def latents_from_seeds(seeds, latent_dim: int) -> torch.Tensor:
    """One latent per seed, each from its own generator: an image does not depend on its batch."""
    return torch.stack([torch.randn(latent_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def sample_grid(generator, seed: int, device, columns: int = GRID_COLUMNS) -> np.ndarray:
    """One row per category, fixed latents: (rows*H, columns*W[, C]) uint8."""
    was_training = generator.training
    generator.eval()
    config = generator.config
    fixed = torch.Generator().manual_seed(seed)
    z = torch.randn(config.num_classes * columns, config.latent_dim, generator=fixed).to(device)
    y = torch.arange(config.num_classes).repeat_interleave(columns).to(device)
    images = to_uint8(generator(z, y)).cpu()
    generator.train(was_training)
    c, h, w = images.shape[1:]
    grid = images.view(config.num_classes, columns, c, h, w).permute(0, 3, 1, 4, 2).reshape(config.num_classes * h, columns * w, c)
    return grid.squeeze(-1).numpy()
