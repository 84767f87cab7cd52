"""Reading a training checkpoint back (the GAN's, the restorer's): tensors, numbers and strings only, never a pickle."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from productstudio.errors import DataError


def load_checkpoint(path: Path) -> dict:
    """A checkpoint holds tensors, numbers and strings only: torch's weights-only unpickler refuses anything else
    (a planted pickle that would run code). Its message invites a full unpickle; ours says what to do instead."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if not line.startswith("Check the documentation")), "")
        raise DataError(f"{path}: refused, not a checkpoint this trainer wrote ({reason}); "
                        "delete it to train afresh") from None
