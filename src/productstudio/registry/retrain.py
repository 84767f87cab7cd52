"""Retrain only when the data or the params changed since the last registered model.

The fingerprint of "what a model was trained on" is the pair (``data.version``, ``params.hash``) that
``register`` tags on every version. ``retrain_if_changed`` compares the current pair with the newest
version's tags: equal means nothing to do (and no torch import, so the check takes seconds);
otherwise it runs the pipeline (``dvc repro``, whose register and promote stages register and judge the
new model) and then makes sure the result is registered and judged, also when DVC found those stages up
to date (e.g. against another tracking store). On a fresh clone the processed data is missing: it is first
pulled from the DVC remote (only that output), so a data version that is already registered is not retrained.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from productstudio.config import load_params
from productstudio.data import remote, store
from productstudio.errors import ServiceError


@dataclass(frozen=True)
class RetrainResult:
    ran: bool
    message: str  # one line
    promotion: dict | None = None


def dvc_repro() -> None:
    result = subprocess.run([sys.executable, "-m", "dvc", "repro"], text=True)
    if result.returncode != 0:
        raise ServiceError(f"dvc repro failed with exit code {result.returncode}")


def dvc_pull(processed_dir: Path) -> None:
    try:
        remote.pull([processed_dir])
    except ServiceError as error:
        raise ServiceError(f"{error}; --no-pull rebuilds the data instead (dvc repro)") from None


def what_changed(params_path: str | Path, processed_dir: str | Path) -> tuple[str | None, object | None, dict]:
    """(None if nothing changed else why, the newest version, the current fingerprint)."""
    from productstudio.registry.model_registry import latest_version, params_hash

    params = load_params(params_path)
    manifest = Path(processed_dir) / "manifest.json"
    current = {"data.version": store.data_version(processed_dir) if manifest.is_file() else None,
               "params.hash": params_hash(params)}
    latest = latest_version(params.register.model_name)
    if latest is None:
        return f"no registered version of '{params.register.model_name}' yet", None, current
    if current["data.version"] is None:
        return f"{manifest} is missing (dvc pull, or the pipeline has not run here)", latest, current
    for key, label in (("data.version", "data"), ("params.hash", "params")):
        if latest.tags.get(key) != current[key]:
            return (f"{label} changed since version {latest.version} "
                    f"({str(latest.tags.get(key))[:12]} -> {current[key][:12]})"), latest, current
    return None, latest, current


def retrain_if_changed(params_path: str | Path = "params.yaml", processed_dir: str | Path = "data/processed",
                       repro: Callable[[], None] = dvc_repro, after: Callable[[], dict] | None = None,
                       pull: Callable[[Path], None] | None = dvc_pull) -> RetrainResult:
    """Run ``repro`` (then ``after``: register + promote) only when data or params changed; ``pull`` fetches
    a missing ``processed_dir`` first (None: compare without it, which means retrain)."""
    why, latest, current = what_changed(params_path, processed_dir)
    if pull is not None and latest is not None and current["data.version"] is None:
        # A fresh clone: the data version dvc.lock names may be the registered one. Pulling it (seconds to
        # minutes) is far cheaper than a retrain; without a registered version there is nothing to compare.
        pull(Path(processed_dir))
        why, latest, current = what_changed(params_path, processed_dir)
    if why is None:
        return RetrainResult(False, f"nothing changed since version {latest.version} "
                                    f"(data {current['data.version'][:12]}, params {current['params.hash'][:12]})")
    repro()
    promotion = after() if after else None
    return RetrainResult(True, f"retrained: {why}", promotion)
