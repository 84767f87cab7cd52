"""Class-conditional GAN for small product images (28/32/64 px), sized for a CPU.

Generator: latent + category embedding -> resize-and-convolve blocks with class-conditional batch norm
(nearest upsampling + 3x3 conv rather than transposed conv: no checkerboard artefacts, and it
quantizes with ordinary conv kernels later). Discriminator: spectral-normalised convolutions with a
projection head (Miyato & Koyama 2018), trained with R3GAN's relativistic loss and R1/R2 (or hinge;
training.loop has the losses and penalties), plus a minibatch standard
deviation feature (Karras et al. 2018): without it this small discriminator let the generator give
nearly one image per category whatever the latent (within-category pixel std 0.09 against 0.35 for
real images after 400 steps; 0.26 with it and a 2x discriminator learning rate).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm


@dataclass(frozen=True)
class GANConfig:
    num_classes: int = 10
    channels: int = 1  # 1 grey, 3 RGB
    image_size: int = 28
    latent_dim: int = 64
    g_width: int = 32  # channels at full resolution; doubled at each lower resolution
    d_width: int = 32
    g_block: str = "conv"  # "conv": upsample + one conv per resolution; "residual": two convs and a shortcut

    def to_dict(self) -> dict:
        return asdict(self)


def start_resolution(image_size: int) -> tuple[int, int]:
    """(starting side, number of 2x upsamplings): 28 = 7*2^2, 32 = 4*2^3, 64 = 4*2^4."""
    start = 7 if image_size % 7 == 0 else 4
    ups = int(round(math.log2(image_size / start)))
    if start * 2**ups != image_size:
        raise ValueError(f"image_size {image_size} is not 7*2^k or 4*2^k")
    return start, ups


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d that data-parallel training can switch (``sync``) to statistics over all ranks' batches."""

    sync = False  # a class default: weights load and copy as nn.BatchNorm2d's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return synced_batch_norm(self, x) if self.sync and self.training else super().forward(x)


def synced_batch_norm(norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``norm`` in training mode with the mean and variance of the batches of all ranks together.

    torch's SyncBatchNorm refuses CPU tensors; this sums per-channel moments with an all-reduce that
    autograd sees through, so each rank's gradients include the other ranks' share of the statistics.
    Equal batches on every rank give what one process computes on the whole batch.
    """
    import warnings

    import torch.distributed as dist
    from torch.distributed.nn.functional import all_reduce

    local = x.shape[0] * x.shape[2] * x.shape[3]
    with warnings.catch_warnings():
        # Deprecated in favour of functional collectives, whose all_reduce has no autograd (torch 2.14).
        warnings.simplefilter("ignore", FutureWarning)
        moments = all_reduce(torch.stack([x.sum(dim=(0, 2, 3)), x.square().sum(dim=(0, 2, 3))]))
    count = local * dist.get_world_size()
    mean = moments[0] / count
    var = moments[1] / count - mean.square()
    with torch.no_grad():  # running statistics as nn.BatchNorm2d keeps them (unbiased variance)
        momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked + 1)
        norm.running_mean.lerp_(mean.detach(), momentum)
        norm.running_var.lerp_(var.detach() * count / (count - 1), momentum)
        norm.num_batches_tracked += 1
    out = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + norm.eps)
    if norm.affine:
        out = out * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]
    return out


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose scale and shift are chosen by the category."""

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.norm = BatchNorm2d(features, affine=False)
        self.gain = nn.Embedding(num_classes, features)
        self.bias = nn.Embedding(num_classes, features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    strength = 1.0  # set by the Generator: 0 ignores the category (see Generator.condition_strength)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gain, bias = self.gain(y), self.bias(y)
        if self.strength != 1.0:
            gain, bias = 1 + self.strength * (gain - 1), self.strength * bias
        return self.norm(x) * gain[:, :, None, None] + bias[:, :, None, None]


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm = ConditionalBatchNorm(cout, num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.relu(self.norm(self.conv(x), y))


class ResidualUpBlock(nn.Module):
    """Pre-activation residual block (the BigGAN generator's, without attention): norm, ReLU, upsample,
    conv, norm, ReLU, conv, plus an upsampled 1x1-conv shortcut. Twice the convolutions of UpBlock."""

    def __init__(self, cin: int, cout: int, num_classes: int):
        super().__init__()
        self.norm1 = ConditionalBatchNorm(cin, num_classes)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2 = ConditionalBatchNorm(cout, num_classes)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.norm1(x, y)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h), y)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Generator(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        if config.g_block not in ("conv", "residual"):
            raise ValueError(f"g_block {config.g_block!r}: choose conv or residual")
        self.config = config
        start, ups = start_resolution(config.image_size)
        widths = [config.g_width * 2 ** (ups - i) for i in range(ups + 1)]
        residual = config.g_block == "residual"
        self.start = start
        self.embed = nn.Embedding(config.num_classes, config.latent_dim)
        self.project = nn.Linear(2 * config.latent_dim, widths[0] * start * start)
        block = ResidualUpBlock if residual else UpBlock
        # Plain blocks normalise after each conv; residual blocks before it, so theirs comes at the end.
        self.norm0 = ConditionalBatchNorm(widths[-1 if residual else 0], config.num_classes)
        self.blocks = nn.ModuleList(block(widths[i], widths[i + 1], config.num_classes) for i in range(ups))
        self.to_image = nn.Conv2d(widths[-1], config.channels, 3, padding=1)
        self._condition_strength = 1.0  # not saved: a trained model always runs at full strength

    @property
    def condition_strength(self) -> float:
        """How much the category counts, 0..1; training ramps it up (train.condition_ramp), a trained model uses 1."""
        return self._condition_strength

    @condition_strength.setter
    def condition_strength(self, value: float) -> None:
        self._condition_strength = float(value)
        for module in self.modules():
            if isinstance(module, ConditionalBatchNorm):
                module.strength = float(value)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Latents (N, latent_dim) and categories (N,) -> images (N, C, H, W) in [-1, 1]."""
        embedding = self.embed(y)
        if self.condition_strength != 1.0:
            embedding = self.condition_strength * embedding
        x = self.project(torch.cat([z, embedding], dim=1))
        x = x.view(len(z), -1, self.start, self.start)
        residual = self.config.g_block == "residual"
        if not residual:
            x = F.relu(self.norm0(x, y))
        for block in self.blocks:
            x = block(x, y)
        if residual:
            x = F.relu(self.norm0(x, y))
        return torch.tanh(self.to_image(x))


class MinibatchStd(nn.Module):
    """Appends one channel: the mean std of the features over small groups of the batch.

    A batch of near-identical fakes has a low std, which real batches never have, so the
    discriminator can punish a generator that ignores its latent.
    """

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = next(g for g in (self.group_size, 2, 1) if n % g == 0)
        # sqrt(var + eps), not .std(): where a group's features are identical (the black
        # corners of Fashion-MNIST) std's derivative is 0/0, and R1/R2 differentiate it twice.
        var = x.view(group, n // group, c, h, w).var(dim=0, unbiased=False)
        std = torch.sqrt(var + 1e-8).mean(dim=(1, 2, 3))
        feature = std.repeat(group).view(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, feature], dim=1)


class Discriminator(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        start, downs = start_resolution(config.image_size)
        widths = [config.d_width * 2**i for i in range(downs + 1)]
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(config.channels, widths[0], 3, padding=1)), nn.LeakyReLU(0.2)]
        for i in range(downs):
            layers += [spectral_norm(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        layers += [MinibatchStd(), spectral_norm(nn.Conv2d(widths[-1] + 1, widths[-1], 3, padding=1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = spectral_norm(nn.Embedding(config.num_classes, widths[-1]))

    condition_strength = 1.0  # weight of the projection (category) term; see Generator.condition_strength

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x).sum(dim=(2, 3))  # global sum pooling
        return self.linear(h).squeeze(1) + self.condition_strength * (self.embed(y) * h).sum(dim=1)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


# The relativistic pairing loss (RpGAN; R3GAN, Huang et al. 2024): the discriminator judges each real image
# against a fake one of the same category rather than each on its own, so it cannot separate the two sets by
# a level shared by all fakes; its authors pair it with R1 and R2 penalties, without which it can diverge.
def relativistic_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake_logits - real_logits).mean()


def relativistic_g_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(real_logits - fake_logits).mean()
