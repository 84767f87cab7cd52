"""The ``edit`` task, free of TorchServe: a product photo in, its studio exports out (``editing.studio``).

Request: the photo's bytes as the body (``curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg'``), or a
multipart upload (the file in a ``data`` part); the presets in an ``X-Preset:
amazon-main,instagram-4x5`` header or a ``preset`` form field (TorchServe does not pass a POST's query string to
the worker); default: the archive's ``edit.presets``.

Answer: one preset -> the exported image itself (image/jpeg, image/png or image/webp, XMP provenance inside);
several presets -> a ZIP of ``<preset>.<ext>`` files and ``report.json`` (checks per export); with
``Accept: application/json`` -> the report with the images in base64.

Limits, checked before any pixel is decoded: the body size (``edit.max_upload_bytes``; TorchServe's own
``max_request_size`` answers 413 earlier) and the declared pixel count (``edit.max_pixels``). A corrupt or hostile
file is a 400 (413 for a decompression bomb); a photo whose cut-out is refused by the gates, or whose every
export fails its checks, is a 422 with the one-line reason. The server keeps serving either way.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from productstudio.errors import BadRequest

SERVING_META = "serving.json"


@dataclass(frozen=True)
class EditRequest:
    photo: np.ndarray  # (H, W, 3) uint8 RGB, upright
    sha256: str
    presets: tuple[str, ...]
    answer: str  # "image", "zip" or "json"


def _text(value) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def parse_presets(options: dict, known: dict, default: list[str]) -> tuple[str, ...]:
    raw = options.get("preset") or options.get("x-preset")
    names = [n.strip() for n in _text(raw).split(",") if n.strip()] if raw else list(default)
    if not names:
        raise BadRequest(f"name a preset: ?preset=<name> (known: {', '.join(known)})")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadRequest(f"unknown preset {unknown[0][:40]!r} (known: {', '.join(known)})")
    if len(set(names)) != len(names):
        raise BadRequest("a preset is named twice")
    return tuple(names)


def decode_photo(body, max_bytes: int, max_pixels: int) -> np.ndarray:
    """The upload as (H, W, 3) uint8 RGB; ``BadRequest`` 400/413 with the reason for anything unusable."""
    from productstudio.data.images import BadImage, open_image, to_mode, upright

    if isinstance(body, str) or not isinstance(body, (bytes, bytearray)):
        raise BadRequest("send the photo's bytes as the body (Content-Type: image/jpeg, image/png or image/webp)")
    if len(body) == 0:
        raise BadRequest("the body is empty; send a photo")
    if len(body) > max_bytes:
        raise BadRequest(f"the photo is {len(body):,} bytes > the limit of {max_bytes:,}", 413)
    try:
        with open_image(bytes(body), max_pixels) as image:
            return np.asarray(to_mode(upright(image), "RGB"))
    except BadImage as error:
        status = 413 if str(error).startswith("decompression bomb") else 400
        raise BadRequest(str(error), status) from None


def wanted_answer(accept: str | None, presets: tuple[str, ...]) -> str:
    first = (accept or "").split(",")[0].split(";")[0].strip().lower()
    if first == "application/json":
        return "json"
    if first == "application/zip" or len(presets) > 1:
        return "zip"
    return "image"


def zip_exports(exports: list, report: dict, extensions: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # images are compressed already
        for export in exports:
            archive.writestr(f"{export.preset}.{extensions[export.preset]}", export.data)
        archive.writestr("report.json", json.dumps(report, indent=2))
    return buffer.getvalue()


class EditTask:
    """The task's contract with the handler (see ``registry.py``)."""

    name = "edit"

    def __init__(self, editor, model_name: str, version: str):
        self.editor, self.settings = editor, editor.settings
        self.model_name, self.version = model_name, version

    @classmethod
    def load(cls, model_dir: Path, model_name: str, version: str, variant: str = "fp32", threads: int = 0) -> "EditTask":
        from productstudio.config import EditSettings
        from productstudio.editing.studio import StudioEditor

        meta = json.loads((Path(model_dir) / SERVING_META).read_text())
        settings = EditSettings.model_validate(meta["edit"])
        return cls(StudioEditor.load(settings, threads=threads, weights_root=Path(model_dir)), model_name, version)

    @staticmethod
    def archive_files(model_dir: Path, variant: str) -> list[Path]:
        """The weights root (``model_dir``): its u2netp/ and ppocr-det/ folders (model.onnx + config.json each),
        checked against their pins first. torch-model-archiver copies a folder's contents to the archive's root,
        so the archive holds u2netp/ and ppocr-det/ as the worker's weights root."""
        from productstudio.models.pretrained import weights_dir

        for name in ("u2netp", "ppocr-det"):
            weights_dir(name, Path(model_dir))
        return [Path(model_dir)]

    def parse(self, body, accept: str | None, options: dict | None = None) -> EditRequest:
        presets = parse_presets(options or {}, self.settings.preset_table, self.settings.presets)
        photo = decode_photo(body, self.settings.max_upload_bytes, self.settings.max_pixels)
        return EditRequest(photo, hashlib.sha256(bytes(body)).hexdigest(), presets, wanted_answer(accept, presets))

    def run(self, requests: list[EditRequest]) -> list:
        from productstudio.editing.studio import select_presets

        return [self.editor.edit(r.photo, select_presets(self.settings, list(r.presets)), source_sha256=r.sha256)
                for r in requests]

    def respond(self, request: EditRequest, edited) -> tuple[str, object]:
        from productstudio.editing.studio import EXTENSIONS
        from productstudio.imaging import FORMATS

        if edited.refused:
            raise BadRequest(f"refused: {edited.refused}", 422)
        passing = [e for e in edited.exports if e.passed]
        if not passing:
            raise BadRequest("refused: " + "; ".join(f"{e.preset}: {e.refused}" for e in edited.exports), 422)
        formats = {e.preset: self.settings.preset_table[e.preset].format for e in edited.exports}
        report = {"model": self.model_name, "version": self.version, "source_sha256": request.sha256,
                  "exports": [{"preset": e.preset, "passed": e.passed, "upscale": round(e.upscale, 3),
                               "reason": e.refused, "checks": e.checks} for e in edited.exports]}
        if request.answer == "image":
            return FORMATS[formats[passing[0].preset]], passing[0].data
        if request.answer == "zip":
            extensions = {name: EXTENSIONS[fmt] for name, fmt in formats.items()}
            return "application/zip", zip_exports(passing, report, extensions)
        for entry, export in zip(report["exports"], edited.exports):
            entry["image"] = base64.b64encode(export.data).decode("ascii") if export.passed else None
        return "application/json", report
