"""Conditional VAE baseline: the same decoder shape as the GAN generator, an encoder that sees the category."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from productstudio.models.gan import BatchNorm2d, GANConfig, Generator, start_resolution


class Encoder(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        _, downs = start_resolution(config.image_size)
        widths = [config.d_width * 2**i for i in range(downs + 1)]
        layers: list[nn.Module] = [nn.Conv2d(config.channels + config.num_classes, widths[0], 3, padding=1), nn.LeakyReLU(0.2)]
        for i in range(downs):
            layers += [nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1), BatchNorm2d(widths[i + 1]), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.num_classes = config.num_classes
        self.to_stats = nn.Linear(widths[-1], 2 * config.latent_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        onehot = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        h = self.features(torch.cat([x, onehot], dim=1)).mean(dim=(2, 3))
        mu, logvar = self.to_stats(h).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)


class ConditionalVAE(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Generator(config)

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None):
        """(reconstruction, mu, logvar); ``noise`` (standard normal, like mu) is drawn from ``generator`` when not given."""
        mu, logvar = self.encoder(x, y)
        if noise is None:
            noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        z = mu + noise * torch.exp(0.5 * logvar)
        return self.decoder(z, y), mu, logvar

    def loss(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return elbo_loss(x, *self(x, y, generator))


def elbo_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> dict[str, torch.Tensor]:
    """Negative ELBO per image: squared error (a Gaussian likelihood on [-1, 1]) plus KL."""
    reconstruction = F.mse_loss(recon, x, reduction="sum") / len(x) / 0.1  # fixed decoder variance
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
    return {"loss": reconstruction + kl, "reconstruction": reconstruction, "kl": kl, "recon": recon}
