"""The ``restore`` task, free of TorchServe: a photo in, the same photo with noise and JPEG artefacts removed out.

When the archive holds the defect detector (``package --task restore --detector DIR``), dust and scratches are
found and filled first, as ``edit restore --detector`` does. Only a photo whose pixels show noise or heavy JPEG
compression goes through the restorer (the archived ``edit.restore_gate``); a clean one comes back unchanged,
and the JSON answer says which and why (``restorer``). Archives packaged before the gate existed restore every
photo, as they did.

Request: the photo's bytes as the body (``curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg'``), or a
multipart upload (the file in a ``data`` part). Answer: a lossless PNG of the same size with XMP provenance (an
edit by ``product-studio-restorer``, its weights' sha256, the source's sha256); ``Accept: application/json`` gives
``{"image": base64, "change_db": ...}``.

The limits are the studio task's (``edit.max_upload_bytes``, ``edit.max_pixels`` from the archived params),
checked before any pixel is decoded: 413 over them, 400 for a corrupt or non-image body; the server keeps serving.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from productstudio.serving.tasks.edit import SERVING_META, decode_photo


@dataclass(frozen=True)
class RestoreRequest:
    photo: np.ndarray  # (H, W, 3) uint8 RGB, upright
    sha256: str
    answer: str  # "image" or "json"


class RestoreTask:
    """The task's contract with the handler (see ``registry.py``)."""

    name = "restore"

    def __init__(self, model, weights_sha256: str, max_bytes: int, max_pixels: int, model_name: str, version: str,
                 fill_dust=None, gate=None):
        from productstudio.config import RestoreGateSettings

        self.model, self.weights_sha256 = model, weights_sha256
        self.gate = gate or RestoreGateSettings(enabled=False)
        self.fill_dust = fill_dust  # photo -> photo with detected dust filled, or None
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.model_name, self.version = model_name, version

    @classmethod
    def load(cls, model_dir: Path, model_name: str, version: str, variant: str = "fp32",
             threads: int = 0) -> "RestoreTask":
        import torch

        from productstudio.config import RestoreGateSettings
        from productstudio.editing.folder_edit import restore_digest
        from productstudio.models.restorer import load_restorer

        if threads:
            torch.set_num_threads(threads)
        meta = json.loads((Path(model_dir) / SERVING_META).read_text())
        # an archive without a gate (packaged before it existed) restores every photo, as it did
        gate = RestoreGateSettings.model_validate(meta.get("restore_gate", {"enabled": False}))
        fill_dust, digest = None, restore_digest(model_dir, gate=gate)
        if (Path(model_dir) / "detector.safetensors").is_file():
            from productstudio.models.defect_detector import dust_filler, load_detector

            radius = int(meta["dust_fill_radius"])
            fill_dust = dust_filler(*load_detector(model_dir), radius)
            digest = restore_digest(model_dir, model_dir, radius, gate)
        return cls(load_restorer(model_dir), digest, int(meta["max_upload_bytes"]), int(meta["max_pixels"]),
                   model_name, version, fill_dust, gate)

    @staticmethod
    def archive_files(model_dir: Path, variant: str) -> list[Path]:
        """The trained restorer: its safetensors weights and JSON description (nothing unpickled)."""
        from productstudio.models.restorer import load_restorer

        load_restorer(model_dir)  # a missing or broken model fails here, not in the worker
        return [Path(model_dir) / "restorer.safetensors", Path(model_dir) / "restorer.json"]

    def parse(self, body, accept: str | None, options: dict | None = None) -> RestoreRequest:
        photo = decode_photo(body, self.max_bytes, self.max_pixels)
        first = (accept or "").split(",")[0].split(";")[0].strip().lower()
        return RestoreRequest(photo, hashlib.sha256(bytes(body)).hexdigest(),
                              "json" if first == "application/json" else "image")

    def run(self, requests: list[RestoreRequest]) -> list[tuple[np.ndarray, dict]]:
        from productstudio.editing.restore_gate import gated_restore

        results = []
        for r in requests:
            restored, verdict = gated_restore(self.model, self.fill_dust(r.photo) if self.fill_dust else r.photo,
                                              self.gate)
            results.append((restored, verdict.as_dict()))
        return results

    def respond(self, request: RestoreRequest, result: tuple[np.ndarray, dict]) -> tuple[str, object]:
        from PIL import Image

        from productstudio.editing.provenance import EDITED, Provenance, with_provenance
        from productstudio.editing.folder_edit import MODEL_NAME, change_db

        restored, verdict = result
        buffer = io.BytesIO()
        Image.fromarray(restored).save(buffer, format="PNG")
        provenance = Provenance(EDITED, MODEL_NAME, f"sha256:{self.weights_sha256[:16]}",
                                source_sha256=request.sha256, extra={"operation": "restore"})
        data = with_provenance(buffer.getvalue(), provenance)
        if request.answer == "image":
            return "image/png", data
        return "application/json", {"model": self.model_name, "version": self.version,
                                     "source_sha256": request.sha256, "change_db": change_db(request.photo, restored),
                                     "restorer": verdict,
                                     "image": base64.b64encode(data).decode("ascii")}
