"""A small product-category classifier trained in the pipeline on the same data.

Its penultimate features give a fast domain-specific feature space (a Frechet distance there is
quick to compute on a CPU) and its predictions say whether a generated "Sneaker" looks like one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from productstudio.artifacts import write_json_atomic

WEIGHTS = "classifier.safetensors"
CONFIG = "config.json"


@dataclass(frozen=True)
class ClassifierConfig:
    num_classes: int = 10
    channels: int = 1
    width: int = 32
    feature_dim: int = 128


class ProductClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(
            nn.Conv2d(config.channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(16 * w, config.feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> (N, feature_dim)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def save_classifier(model: ProductClassifier, directory: str | Path, **info) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(directory / WEIGHTS))
    write_json_atomic(directory / CONFIG, {"model": asdict(model.config), **info})


def load_classifier(directory: str | Path, device: str | torch.device = "cpu") -> tuple[ProductClassifier, dict]:
    directory = Path(directory)
    info = json.loads((directory / CONFIG).read_text())
    model = ProductClassifier(ClassifierConfig(**info["model"]))
    model.load_state_dict(load_file(str(directory / WEIGHTS)))
    return model.to(device).eval(), info
