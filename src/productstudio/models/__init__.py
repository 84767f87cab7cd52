"""Models and their on-disk form: a state dict in safetensors plus a JSON config (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from productstudio.artifacts import write_json_atomic
from productstudio.models.gan import GANConfig, Generator

WEIGHTS = "generator.safetensors"
CONFIG = "config.json"


def save_generator(model: Generator, directory: str | Path, **info) -> Path:
    """Write a generator as safetensors + config.json (plus any extra info, e.g. category names)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS))
    write_json_atomic(directory / CONFIG, {"model": model.config.to_dict(), **info})
    return directory


def load_generator(directory: str | Path, device: str | torch.device = "cpu") -> tuple[Generator, dict]:
    """Load a saved generator in eval mode; returns (model, config dict with the extra info)."""
    directory = Path(directory)
    if not (directory / WEIGHTS).exists():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS}; not a saved generator")
    info = json.loads((directory / CONFIG).read_text())
    model = Generator(GANConfig(**info["model"]))
    model.load_state_dict(load_file(str(directory / WEIGHTS), device="cpu"))
    return model.to(device).eval(), info


def resolve_device(name: str) -> torch.device:
    """'auto' takes CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
