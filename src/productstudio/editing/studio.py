"""Studio shots from a folder of product photos: cut out, gate, compose per preset, check, export with provenance.

    editor = StudioEditor.load(settings)                   # one ONNX session per net, reused for every photo
    result = editor.edit(photo_rgb, ["amazon-main"], ...)   # what the served task and the batch both call
    report = studio_batch(in_dir, out_dir, settings, ["amazon-main", "instagram-4x5"])

Per photo: the mask and the text detection run once and are shared by every preset (the costly parts), then each
preset composes, encodes (XMP provenance inside; a signed C2PA manifest too with ``edit.c2pa.sign``), decodes
and checks its own file. What is written is what passed:

    out/<preset>/<relative path>.<ext>    exports that pass every rule of their preset
    out/report.json                       every photo: exported / refused (one-line reason) / quarantined
    out/quarantine.tsv                    files that are not usable images, with the reason (as validation does)
    out/metrics.json                      pass rates (DVC metrics)
    out/index.html, out/thumbs/           the contact sheet: before / after / checks, refused photos with reasons
    out/records/                          one finished photo per file: an interrupted run resumes from them

Sources are only read, never written. A refused photo is never exported silently.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from productstudio import __version__
from productstudio.artifacts import write_json_atomic
from productstudio.config import EditSettings, PresetSettings, section_dict
from productstudio.data.images import BadImage, open_image, to_mode, upright
from productstudio.editing.compliance import check_export, gate_cutout, gate_upscale, passed
from productstudio.editing.compose import compose, encode_export, upscale_needed
from productstudio.editing.cutout import Cutout, cut_out
from productstudio.editing.contact_sheet import before_after_png, write_contact_sheet, write_thumb
from productstudio.editing.provenance import EDITED, Provenance, now_iso, xmp_packet
from productstudio.errors import ParamsError
from productstudio.models.pretrained import PRETRAINED, weights_dir

EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
SAMPLES = 6  # before/after sheets per batch
TEXT_LIMIT_SIDE = 640  # text detection runs on the product at this size (once per photo)


@dataclass
class Export:
    preset: str
    data: bytes | None  # the encoded file (None when refused before composing)
    upscale: float
    checks: dict = field(default_factory=dict)
    refused: str | None = None  # one-line reason when this preset's export is refused

    @property
    def passed(self) -> bool:
        return self.refused is None and passed(self.checks)


@dataclass
class Edited:
    cutout: Cutout
    refused: str | None  # the photo's refusal (all presets), or None
    exports: list[Export]
    text_boxes: list


def select_presets(settings: EditSettings, names: list[str]) -> dict[str, PresetSettings]:
    unknown = [name for name in names if name not in settings.preset_table]
    if unknown or not names:
        raise ParamsError(f"unknown preset {', '.join(unknown) or '(none given)'}: choose from "
                          f"{', '.join(settings.preset_table)} (edit.preset_definitions in params.yaml)")
    return {name: settings.preset_table[name] for name in names}


def model_version() -> str:
    spec = PRETRAINED["u2netp"]
    return f"{spec.package}=={spec.version} u2netp sha256:{spec.sha256[:16]}"


def product_view(cutout: Cutout, limit_side: int = TEXT_LIMIT_SIDE) -> np.ndarray:
    """The product alone on white, cropped to its box and shrunk to ``limit_side``: what text detection reads."""
    x0, y0, x1, y1 = cutout.box
    alpha = cutout.alpha[y0:y1, x0:x1, None]
    crop = cutout.foreground[y0:y1, x0:x1].astype(np.float32) * alpha + 255.0 * (1 - alpha)
    image = Image.fromarray(crop.round().astype(np.uint8))
    scale = limit_side / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    return np.asarray(image)


class StudioEditor:
    """The loaded nets and the settings; ``edit`` turns one photo into its preset exports."""

    def __init__(self, segmenter, text_detector, settings: EditSettings, signer=None):
        self.segmenter, self.text_detector, self.settings = segmenter, text_detector, settings
        self.signer = signer  # a content_credentials.ManifestSigner: every export gets a C2PA manifest

    @classmethod
    def load(cls, settings: EditSettings, threads: int = 0, weights_root: Path | None = None) -> "StudioEditor":
        from productstudio.models.salient import load_segmenter
        from productstudio.models.text_detector import load_text_detector

        signer = None
        if settings.c2pa.sign:
            from productstudio.editing.content_credentials import ManifestSigner

            signer = ManifestSigner.from_settings(settings.c2pa)
        return cls(load_segmenter(weights_dir("u2netp", weights_root), threads=threads),
                   load_text_detector(weights_dir("ppocr-det", weights_root), threads=threads), settings, signer)

    def edit(self, photo: np.ndarray, presets: dict[str, PresetSettings], source_sha256: str = "",
             created: str | None = None) -> Edited:
        settings = self.settings
        cutout = cut_out(photo, self.segmenter, settings.cutout)
        reasons = gate_cutout(cutout, settings.gates)
        if reasons:
            return Edited(cutout, "; ".join(reasons), [], [])
        text_boxes = []
        if any(preset.check_text for preset in presets.values()):
            text_boxes = self.text_detector.detect(product_view(cutout))
        created = now_iso() if created is None else created  # "": no date, so a batch rerun writes the same bytes
        exports = []
        for name, preset in presets.items():
            upscale = upscale_needed(cutout, preset)
            too_much = gate_upscale(upscale, settings.gates)
            if too_much:
                exports.append(Export(name, None, upscale, refused=too_much))
                continue
            composed = compose(cutout, preset)
            provenance = Provenance(digital_source_type=EDITED, software=f"Product Studio {__version__}",
                                    model_name="u2netp (background removal)", model_version=model_version(),
                                    source_sha256=source_sha256, preset=name, created=created)
            data = encode_export(composed, preset, xmp=xmp_packet(provenance))
            if self.signer is not None:
                data = self.signer.sign(data, provenance)  # before the checks: they judge the file as shipped
            checks = check_export(data, preset, composed, text_boxes if preset.check_text else None)
            failed = [rule for rule, check in checks.items() if not check["ok"]]
            refused = f"fails {', '.join(failed)}" if failed else None
            exports.append(Export(name, data, composed.upscale, checks, refused))
        return Edited(cutout, None, exports, text_boxes)


def list_photos(in_dir: Path) -> list[Path]:
    """Every file under ``in_dir`` (sorted), hidden ones aside: what is not an image is quarantined, not skipped."""
    return sorted(p for p in in_dir.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                            p.relative_to(in_dir).parts))


def read_photo(path: Path, max_pixels: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB, upright; ``BadImage`` with a one-line reason for anything unusable."""
    with open_image(path, max_pixels) as image:
        return np.asarray(to_mode(upright(image), "RGB"))


def settings_key(settings: EditSettings, presets: dict[str, PresetSettings]) -> str:
    """What a finished photo's record depends on besides the photo: the settings, the presets, the code and weights."""
    wanted = {"cutout": section_dict(settings.cutout), "gates": section_dict(settings.gates),
              "c2pa": section_dict(settings.c2pa),
              "presets": {name: section_dict(p) for name, p in presets.items()}, "version": __version__,
              "weights": model_version()}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]


def studio_batch(in_dir: str | Path, out_dir: str | Path, settings: EditSettings, preset_names: list[str],
                 limit: int | None = None, editor: StudioEditor | None = None, progress: bool = True,
                 created: str = "") -> dict:
    """Edit every photo under ``in_dir`` into ``out_dir`` (layout in the module doc) and return the report.

    The exports' XMP names no creation date unless ``created`` gives one (report.json has the run's time): the
    same photos, settings, code and weights then give the same bytes, as DVC expects of a stage."""
    from tqdm import tqdm

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        from productstudio.errors import MissingInput

        raise MissingInput(f"{in_dir}: no such photo folder")
    if out_dir.resolve() == in_dir.resolve() or in_dir.resolve() in out_dir.resolve().parents:
        raise ParamsError(f"{out_dir}: the output folder must not be inside the photo folder (sources are never written)")
    presets = select_presets(settings, preset_names)
    photos = list_photos(in_dir)[:limit] if limit else list_photos(in_dir)
    editor = editor or StudioEditor.load(settings, threads=0)
    key = settings_key(settings, presets)
    records_dir = out_dir / "records"
    records_dir.mkdir(parents=True, exist_ok=True)
    rows, resumed = [], 0
    for path in tqdm(photos, desc="studio", unit="photo", disable=not progress):
        rel = path.relative_to(in_dir).as_posix()
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        record_path = records_dir / f"{hashlib.sha256((rel + sha + key).encode()).hexdigest()[:24]}.json"
        if record_path.is_file():
            row = json.loads(record_path.read_text())
            if all((out_dir / e["file"]).is_file() for e in row["exports"] if e.get("file")):
                rows.append(row)
                resumed += 1
                continue
        rows.append(_edit_one(editor, path, rel, sha, presets, out_dir, settings, created))
        write_json_atomic(record_path, rows[-1])
    report = {"source": str(in_dir), "out": str(out_dir), "presets": list(presets), "settings_key": key,
              "weights": model_version(), "c2pa_signed": editor.signer is not None, "resumed": resumed, "summary": summarise(rows, list(presets)), "photos": rows}
    write_json_atomic(out_dir / "report.json", report)
    write_json_atomic(out_dir / "metrics.json", pass_rates(report["summary"]))
    write_samples(report, in_dir, out_dir)
    quarantined = [r for r in rows if r["status"] == "quarantined"]
    (out_dir / "quarantine.tsv").write_text("path\treason\n" + "".join(f"{r['source']}\t{r['reason']}\n"
                                                                         for r in quarantined))
    write_contact_sheet(report, out_dir, in_dir)
    return report


def _edit_one(editor: StudioEditor, path: Path, rel: str, sha: str, presets: dict[str, PresetSettings],
              out_dir: Path, settings: EditSettings, created: str | None) -> dict:
    row = {"source": rel, "sha256": sha, "status": "quarantined", "reason": None, "cutout": None, "exports": []}
    try:
        photo = read_photo(path, settings.max_pixels)
    except BadImage as error:
        row["reason"] = str(error)
        return row
    before = Image.fromarray(photo)
    write_thumb(before, out_dir / "thumbs" / "source" / f"{rel}.jpg")
    row["thumb"] = f"thumbs/source/{rel}.jpg"
    edited = editor.edit(photo, presets, source_sha256=sha, created=created)
    c = edited.cutout
    row["cutout"] = {"foreground_fraction": round(c.foreground_fraction, 4), "edges_touched": c.edges_touched,
                     "uncertain_fraction": round(c.uncertain_fraction, 4), "box": list(c.box)}
    row["text_boxes"] = len(edited.text_boxes)
    if edited.refused:
        row.update(status="refused", reason=edited.refused)
        return row
    for export in edited.exports:
        entry = {"preset": export.preset, "upscale": round(export.upscale, 3), "passed": export.passed,
                 "checks": export.checks, "reason": export.refused, "file": None}
        if export.passed:
            preset = presets[export.preset]
            file = Path(export.preset) / f"{Path(rel).with_suffix('')}.{EXTENSIONS[preset.format]}"
            target = out_dir / file
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(export.data)
            partial.replace(target)
            entry["file"] = file.as_posix()
            entry["bytes"] = len(export.data)
        if export.data is not None:  # failed exports get a thumbnail too: the sheet shows what went wrong
            thumb = Path("thumbs") / export.preset / f"{rel}.jpg"
            write_thumb(Image.open(io.BytesIO(export.data)), out_dir / thumb)
            entry["thumb"] = thumb.as_posix()
        row["exports"].append(entry)
    exported = [e for e in row["exports"] if e["passed"]]
    row["status"] = "exported" if exported else "refused"
    if not exported:
        row["reason"] = "; ".join(f"{e['preset']}: {e['reason']}" for e in row["exports"])
    return row


def write_samples(report: dict, in_dir: Path, out_dir: Path, count: int = SAMPLES) -> list[Path]:
    """Before/after sheets (source | each preset's export) of the first ``count`` exported photos, in out/samples/:
    the pictures logged to MLflow."""
    written = []
    for row in [r for r in report["photos"] if r["status"] == "exported"][:count]:
        afters = [(e["preset"], Image.open(out_dir / e["file"])) for e in row["exports"] if e["file"]]
        with Image.open(in_dir / row["source"]) as before:
            path = out_dir / "samples" / f"{len(written):02d}.png"
            written.append(before_after_png(upright(before).convert("RGB"), afters, path, cell=256))
    return written


def summarise(rows: list[dict], presets: list[str]) -> dict:
    count = {status: sum(r["status"] == status for r in rows) for status in ("exported", "refused", "quarantined")}
    per_preset = {}
    for name in presets:
        entries = [e for r in rows for e in r["exports"] if e["preset"] == name]
        per_preset[name] = {"exported": sum(e["passed"] for e in entries), "passed": sum(e["passed"] for e in entries),
                            "refused": len(entries) - sum(e["passed"] for e in entries)}
    return {"photos": len(rows), **count, "presets": per_preset}


def pass_rates(summary: dict) -> dict:
    """Pass rates for DVC metrics and MLflow: of the usable photos, the share exported per preset."""
    usable = max(1, summary["photos"] - summary["quarantined"])
    out = {"photos": summary["photos"], "exported_photos": summary["exported"], "refused_photos": summary["refused"],
           "quarantined_files": summary["quarantined"], "photo_pass_rate": round(summary["exported"] / usable, 4)}
    for name, counts in summary["presets"].items():
        out[f"pass_rate_{name}"] = round(counts["passed"] / usable, 4)
    return out
