"""The ``edit`` task, free of TorchServe: a product photo in, its studio exports out (``editing.studio``), or the
photo enhanced, in the archive's catalogue look or painted in its style.

Request: the photo's bytes as the body (``curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg'``), or a
multipart upload (the file in a ``data`` part); the presets in an ``X-Preset:
amazon-main,instagram-4x5`` header or a ``preset`` form field (TorchServe does not pass a POST's query string to
the worker); default: the archive's ``edit.presets``.

Answer: one preset -> the exported image itself (image/jpeg, image/png or image/webp, XMP provenance inside);
several presets -> a ZIP of ``<preset>.<ext>`` files and ``report.json`` (checks per export); with
``Accept: application/json`` -> the report with the images in base64.

Other operations, chosen with an ``X-Operation`` header or an ``operation`` form field (default ``studio``):
``restore`` (the learned restorer archived with ``package --task edit --restorer DIR``, dust filled first when
``--detector DIR`` came with it), ``enhance`` (``edit.enhance.operations``, or those named in ``X-Operations: white-balance,exposure,sharpen``),
``watermark-removal`` (text found by the OCR detector every edit archive holds, or by the learned watermark
detector archived with ``package --task edit --watermark-detector DIR``, un-blended: only for the merchant's own
images), ``look`` (the catalogue look archived with ``package --task edit
--look look.json``) and ``paint`` (the style
archived with ``--style-image``, ``edit.style.preserve`` and ``strength``). Each answers a lossless PNG with XMP
provenance (``Accept: application/json``: the PNG in base64 with how much the photo changed); an operation the
archive does not hold is a 400 that says how to add it.

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
WATERMARK_DETECTOR_DIR = "watermark-detector"  # steps.package writes the learned watermark detector here


OPERATIONS = ("studio", "watermark-removal", "restore", "enhance", "look", "paint")


@dataclass(frozen=True)
class EditRequest:
    photo: np.ndarray  # (H, W, 3) uint8 RGB, upright
    sha256: str
    presets: tuple[str, ...]
    answer: str  # "image", "zip" or "json"
    operation: str = "studio"  # one of OPERATIONS
    enhancements: tuple[str, ...] = ()  # enhance: which operations, in editing.enhance's order


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


def archive_offer(mar: str | Path) -> dict:
    """What an edit archive can do: its operations (``restore`` with a restorer, ``look`` with a catalogue look,
    ``paint`` with a style code), what finds the watermarks it removes (OCR text boxes or a learned detector),
    its marketplace presets (all, and the default ones) and its upload limits."""
    with zipfile.ZipFile(mar) as archive:
        meta = json.loads(archive.read(SERVING_META))
        names = set(archive.namelist())
    from productstudio.config import EditSettings

    edit = EditSettings.model_validate(meta["edit"])
    operations = ["studio", "watermark-removal"] + ["restore"] * ("restorer.safetensors" in names) + ["enhance"] + \
        ["look"] * bool(meta.get("look")) + ["paint"] * bool(meta.get("style_code"))
    learned = f"{WATERMARK_DETECTOR_DIR}/detector.safetensors" in names
    return {"operations": operations, "watermark_removal": "learned detector" if learned else "OCR text boxes",
            "presets": list(edit.preset_table), "default_presets": list(edit.presets),
            "max_upload_bytes": edit.max_upload_bytes, "max_pixels": edit.max_pixels}


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

    def __init__(self, editor, model_name: str, version: str, look=None, stylizer=None, style_code=None,
                 restorer=None, fill_dust=None, remove_watermark=None):
        self.editor, self.settings = editor, editor.settings
        if remove_watermark is None:  # OCR text boxes, un-blended
            from productstudio.editing.watermark import remove_watermark as remove_text

            def remove_watermark(photo):
                return remove_text(photo, editor.text_detector, editor.settings.dust_fill_radius)
        self.remove_watermark = remove_watermark  # photo -> photo without the watermark
        self.model_name, self.version = model_name, version
        self.restorer, self.fill_dust = restorer, fill_dust  # the learned restorer (and dust filler), or None
        self.look = look  # editing.style.CatalogueLook or None
        self.stylizer, self.style_code = stylizer, style_code  # the painterly style, or None

    @classmethod
    def load(cls, model_dir: Path, model_name: str, version: str, variant: str = "fp32", threads: int = 0) -> "EditTask":
        from productstudio.config import EditSettings
        from productstudio.editing.studio import StudioEditor

        meta = json.loads((Path(model_dir) / SERVING_META).read_text())
        settings = EditSettings.model_validate(meta["edit"])
        look = stylizer = code = None
        if meta.get("look"):
            from productstudio.editing.style import CatalogueLook

            look = CatalogueLook.from_dict(meta["look"])
        if meta.get("style_code"):
            from productstudio.models.pretrained import weights_dir
            from productstudio.models.stylizer import load_stylizer

            stylizer = load_stylizer(weights_dir("magenta-style-predict", Path(model_dir)),
                                     weights_dir("magenta-style-transform", Path(model_dir)), threads=threads)
            code = np.asarray(meta["style_code"], np.float32)
        restorer = fill_dust = None
        if (Path(model_dir) / "restorer.safetensors").is_file():
            from productstudio.models.restorer import load_restorer

            restorer = load_restorer(model_dir)
            if (Path(model_dir) / "detector.safetensors").is_file():
                from productstudio.models.defect_detector import dust_filler, load_detector

                fill_dust = dust_filler(*load_detector(model_dir), settings.dust_fill_radius)
        remove_watermark = None
        if (Path(model_dir) / WATERMARK_DETECTOR_DIR / "detector.safetensors").is_file():
            from productstudio.editing.watermark import load_watermark_detector, remove_watermark_learned
            from productstudio.models.defect_detector import mask_rule

            detector, info = load_watermark_detector(Path(model_dir) / WATERMARK_DETECTOR_DIR)
            min_blob, radius = mask_rule(info)["min_blob"], settings.dust_fill_radius

            def remove_watermark(photo):  # 'edit restore --watermark-detector', one photo
                return remove_watermark_learned(photo, detector, radius, min_blob)
        return cls(StudioEditor.load(settings, threads=threads, weights_root=Path(model_dir)), model_name, version,
                   look, stylizer, code, restorer, fill_dust, remove_watermark)

    @staticmethod
    def archive_files(model_dir: Path, variant: str) -> list[Path]:
        """The weights root (``model_dir``): its u2netp/ and ppocr-det/ folders (model.onnx + config.json each),
        checked against their pins first. torch-model-archiver copies a folder's contents to the archive's root,
        so the archive holds u2netp/ and ppocr-det/ as the worker's weights root."""
        from productstudio.models.pretrained import weights_dir

        for name in ("u2netp", "ppocr-det"):
            weights_dir(name, Path(model_dir))
        return [Path(model_dir)]

    def parse_operation(self, options: dict) -> tuple[str, tuple[str, ...]]:
        from productstudio.editing.enhance import OPERATIONS as ENHANCEMENTS

        raw = options.get("operation") or options.get("x-operation")
        operation = _text(raw).strip().lower() if raw else "studio"
        if operation not in OPERATIONS:
            raise BadRequest(f"unknown operation {operation[:40]!r} (known: {', '.join(OPERATIONS)})")
        if operation == "look" and self.look is None:
            raise BadRequest("this archive holds no catalogue look: package it with 'productstudio package --task "
                             "edit --look look.json'")
        if operation == "restore" and self.restorer is None:
            raise BadRequest("this archive holds no restorer: package it with 'productstudio package --task edit "
                             "--restorer models/restorer [--detector models/detector]'")
        if operation == "paint" and self.style_code is None:
            raise BadRequest("this archive holds no painterly style: package it with 'productstudio package --task "
                             "edit --style-image FILE'")
        enhancements = tuple(self.settings.enhance.operations)
        raw = options.get("operations") or options.get("x-operations")
        if operation == "enhance" and raw:
            enhancements = tuple(n.strip() for n in _text(raw).split(",") if n.strip())
            unknown = [n for n in enhancements if n not in ENHANCEMENTS]
            if unknown or not enhancements:
                raise BadRequest(f"operations: choose one or more of {', '.join(ENHANCEMENTS)}")
        return operation, enhancements

    def parse(self, body, accept: str | None, options: dict | None = None) -> EditRequest:
        operation, enhancements = self.parse_operation(options or {})
        presets = parse_presets(options or {}, self.settings.preset_table, self.settings.presets) \
            if operation == "studio" else ()
        photo = decode_photo(body, self.settings.max_upload_bytes, self.settings.max_pixels)
        answer = wanted_answer(accept, presets) if operation == "studio" else \
            ("json" if wanted_answer(accept, ()) == "json" else "image")
        return EditRequest(photo, hashlib.sha256(bytes(body)).hexdigest(), presets, answer, operation, enhancements)

    def run(self, requests: list[EditRequest]) -> list:
        from productstudio.editing.studio import select_presets

        return [self.editor.edit(r.photo, select_presets(self.settings, list(r.presets)), source_sha256=r.sha256)
                if r.operation == "studio" else self.apply(r) for r in requests]

    def apply(self, request: EditRequest) -> np.ndarray:
        """One photo through watermark removal, restore, enhance, look or paint: the same library functions as
        'edit restore [--watermarks]', 'edit enhance' and 'edit style'."""
        from productstudio.errors import DataError

        settings, segmenter = self.settings, self.editor.segmenter
        try:
            if request.operation == "watermark-removal":
                return self.remove_watermark(request.photo)
            if request.operation == "restore":
                from productstudio.editing.restore_gate import gated_restore

                photo = self.fill_dust(request.photo) if self.fill_dust else request.photo
                return gated_restore(self.restorer, photo, settings.restore_gate)[0]  # a clean photo: unchanged
            if request.operation == "enhance":
                from productstudio.editing.enhance import enhance

                chosen = settings.enhance.model_copy(update={"operations": list(request.enhancements)})
                return enhance(request.photo, chosen, segmenter, settings.cutout)
            if request.operation == "look":
                from productstudio.editing.style import apply_look

                return apply_look(request.photo, self.look, segmenter, settings.cutout, settings.style.tone_strength,
                                  settings.style.white_balance, settings.style.white_balance_p).image
            from productstudio.editing.style import paint

            return paint(request.photo, self.stylizer, self.style_code, settings.style.preserve,
                         settings.style.strength, segmenter, settings.cutout).image
        except DataError as error:  # no product to frame: the photo, not the server, is the problem
            return BadRequest(f"refused: {error}", 422)

    def respond_image(self, request: EditRequest, image: np.ndarray) -> tuple[str, object]:
        from PIL import Image

        from productstudio.editing.folder_edit import change_db
        from productstudio.editing.provenance import EDITED, Provenance, with_provenance

        if isinstance(image, BadRequest):
            raise image
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        provenance = Provenance(EDITED, f"{self.model_name}:{request.operation}", f"version:{self.version}",
                                source_sha256=request.sha256, extra={"operation": request.operation})
        data = with_provenance(buffer.getvalue(), provenance)
        if request.answer == "image":
            return "image/png", data
        return "application/json", {
            "model": self.model_name, "version": self.version, "operation": request.operation,
            "source_sha256": request.sha256, "width": image.shape[1], "height": image.shape[0],
            "change_db": change_db(request.photo, image) if image.shape == request.photo.shape else None,
            "image": base64.b64encode(data).decode("ascii")}

    def respond(self, request: EditRequest, edited) -> tuple[str, object]:
        from productstudio.editing.studio import EXTENSIONS
        from productstudio.imaging import FORMATS

        if request.operation != "studio":
            return self.respond_image(request, edited)
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
