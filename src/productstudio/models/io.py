"""Models and their on-disk form: a state dict in safetensors plus a JSON config (no pickle).

The config names the model's ``kind`` ("gan", "cvae"); ``models.loader.load`` dispatches on it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from productstudio.artifacts import staged_directory, write_json_atomic
from productstudio.errors import MissingInput
from productstudio.models.cvae import Encoder
from productstudio.models.gan import GANConfig, Generator

WEIGHTS = "generator.safetensors"
ENCODER = "encoder.safetensors"
CONFIG = "config.json"


def _save_state(model: torch.nn.Module, path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))


def save_generator(model: Generator, directory: str | Path, encoder: Encoder | None = None, **info) -> Path:
    """Write a generator as safetensors + config.json (plus any extra info, e.g. category names).

    A VAE's ``encoder`` goes beside it (config.json names it under "encoder"): evaluate measures
    reconstructions with it; ``load_generator`` ignores it.
    """
    directory = Path(directory)
    info.setdefault("kind", "gan" if encoder is None else "cvae")  # what models.loader.load dispatches on
    # Written beside the previous generator and swapped in whole: a full disk or a crash half-way leaves the
    # previous one as it was (never its config with new weights), and never another model's encoder beside it.
    with staged_directory(directory) as staging:
        _save_state(model, staging / WEIGHTS)
        if encoder is not None:
            _save_state(encoder, staging / ENCODER)
            info = {**info, "encoder": ENCODER}
        write_json_atomic(staging / CONFIG, {"model": model.config.to_dict(), **info})
    return directory


def load_generator(directory: str | Path, device: str | torch.device = "cpu") -> tuple[Generator, dict]:
    """Load a saved generator in eval mode; returns (model, config dict with the extra info)."""
    directory = Path(directory)
    if not (directory / WEIGHTS).exists():
        raise MissingInput(f"{directory}: no {WEIGHTS}; not a saved generator")
    info = json.loads((directory / CONFIG).read_text())
    model = Generator(GANConfig(**info["model"]))
    model.load_state_dict(load_file(str(directory / WEIGHTS), device="cpu"))
    return model.to(device).eval(), info


def load_encoder(directory: str | Path, device: str | torch.device = "cpu") -> Encoder | None:
    """The VAE encoder saved beside a generator, in eval mode; None when there is none (a GAN)."""
    directory = Path(directory)
    info = json.loads((directory / CONFIG).read_text())
    if not info.get("encoder"):
        return None
    encoder = Encoder(GANConfig(**info["model"]))
    encoder.load_state_dict(load_file(str(directory / info["encoder"]), device="cpu"))
    return encoder.to(device).eval()


def category_names(info: dict) -> list[str]:
    """The category names of a saved model's config (its ids as names when it has none)."""
    return list(info.get("categories") or [str(i) for i in range(info["model"]["num_classes"])])
