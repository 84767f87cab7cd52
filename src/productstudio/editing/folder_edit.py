"""Editing a folder of photos at each photo's full size: the doors 'edit restore', 'edit enhance' and 'edit style'.

    edit = FolderEdit("restore", "restored", MODEL_NAME, digest, lambda photo: restore(model, photo))
    report = edit_folder(in_dir, out_dir, edit, max_pixels)

    out/<relative path>.png       the edited photo, lossless, with XMP provenance (the model or recipe and its digest)
    out/report.json               every file: edited (with how much it changed) or quarantined (one-line reason:
                                  not an image, or a photo the edit cannot take, such as no product to frame)
    out/quarantine.tsv            files that are not usable images, with the reason (as validation does)
    out/samples/<n>.png           before / after at 1:1 (a 256 px centre crop: noise does not show in a thumbnail)
    out/records/                  one finished photo per file: an interrupted run resumes from them (a record
                                  names the source's and the edit's digests, so other settings redo the photo)

Sources are only read, never written; the output folder may not lie inside the photo folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from productstudio.artifacts import write_atomic, write_json_atomic
from productstudio.data.images import BadImage, centre_crop
from productstudio.editing.contact_sheet import before_after_png
from productstudio.editing.provenance import EDITED, Provenance, with_provenance
from productstudio.editing.studio import list_photos, read_photo
from productstudio.errors import DataError, MissingInput, ParamsError
from productstudio.models.restorer import psnr

MODEL_NAME = "product-studio-restorer"  # provenance's model name for the learned restorer
SAMPLES = 6
SAMPLE_SIDE = 256


@dataclass(frozen=True)
class FolderEdit:
    operation: str  # what provenance and the report call it: "restore", "enhance"
    done: str  # the word for an edited photo in messages: "restored", "enhanced"
    model_name: str  # provenance's model (or recipe) name
    digest: str  # sha256 of what decides the pixels (weights, settings): resume records and provenance name it
    # (H, W, 3) uint8 RGB -> the same shape, or (that, notes): notes (what the edit decided) go into the report
    apply: Callable[[np.ndarray], np.ndarray | tuple[np.ndarray, dict]]
    settings: dict = field(default_factory=dict)  # recorded in the report
    whole_samples: bool = False  # before/after of the whole photo (a style is global), not a 1:1 crop


def weights_digest(directory: str | Path, file: str = "restorer.safetensors") -> str:
    """A trained model's identity in provenance and resume records: the sha256 of its weights file."""
    return hashlib.sha256((Path(directory) / file).read_bytes()).hexdigest()


def restore_digest(restorer_dir: str | Path, detector_dir: str | Path | None = None, radius: int = 0,
                   gate=None) -> str:
    """What decides a restored photo's pixels: the restorer's weights, the gate's settings (which photos it
    touches) and, when dust is filled first, the detector's weights, its mask rule (detector.json) and the
    inpainting radius."""
    digest = weights_digest(restorer_dir)
    if gate is not None:
        digest = hashlib.sha256(f"{digest}:gate:{json.dumps(gate.model_dump(), sort_keys=True)}".encode()).hexdigest()
    if detector_dir is None:
        return digest
    detector = f"{weights_digest(detector_dir, 'detector.safetensors')}:{weights_digest(detector_dir, 'detector.json')}"
    return hashlib.sha256(f"{digest}:{detector}:{radius}".encode()).hexdigest()


def change_db(before: np.ndarray, after: np.ndarray) -> float:
    """PSNR of the output against the input: how much the model changed (100 when it left the photo alone)."""
    return round(psnr(before, after), 2)


def edit_folder(in_dir: str | Path, out_dir: str | Path, edit: FolderEdit, max_pixels: int, limit: int | None = None,
                progress: bool = True) -> dict:
    from tqdm import tqdm

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise MissingInput(f"{in_dir}: no such photo folder")
    if out_dir.resolve() == in_dir.resolve() or in_dir.resolve() in out_dir.resolve().parents:
        raise ParamsError(f"{out_dir}: the output folder must not be inside the photo folder (sources are never written)")
    photos = list_photos(in_dir)[:limit] if limit else list_photos(in_dir)
    records = out_dir / "records"
    records.mkdir(parents=True, exist_ok=True)
    rows, resumed = [], 0
    for path in tqdm(photos, desc=edit.operation, unit="photo", disable=not progress):
        rel = path.relative_to(in_dir).as_posix()
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        record = records / f"{hashlib.sha256((rel + sha + edit.digest).encode()).hexdigest()[:24]}.json"
        if record.is_file():
            row = json.loads(record.read_text())
            if row["status"] != "edited" or (out_dir / row["file"]).is_file():
                rows.append(row)
                resumed += 1
                continue
        rows.append(_edit_one(edit, path, rel, sha, out_dir, max_pixels))
        write_json_atomic(record, rows[-1])
    edited = [r for r in rows if r["status"] == "edited"]
    megapixels = sum(r["megapixels"] for r in edited)
    summary = {"files": len(rows), "edited": len(edited), "quarantined": len(rows) - len(edited),
               "resumed": resumed, "megapixels": round(megapixels, 3),
               "seconds_per_megapixel": round(sum(r["seconds"] for r in edited) / megapixels, 3) if megapixels else None}
    report = {"source": str(in_dir), "out": str(out_dir), "operation": edit.operation, "done": edit.done,
              "model": edit.model_name, "digest": edit.digest, "settings": edit.settings, "summary": summary,
              "samples": "whole photos" if edit.whole_samples else "1:1",
              "photos": rows}
    write_json_atomic(out_dir / "report.json", report)
    (out_dir / "quarantine.tsv").write_text("path\treason\n" + "".join(
        f"{r['source']}\t{r['reason']}\n" for r in rows if r["status"] == "quarantined"))
    for index, row in enumerate(edited[:SAMPLES]):
        before = read_photo(in_dir / row["source"], max_pixels)
        after = read_photo(out_dir / row["file"], max_pixels)
        if edit.whole_samples:
            before_after_png(Image.fromarray(before), [(edit.done, Image.fromarray(after))],
                             out_dir / "samples" / f"{index:02d}.png", cell=SAMPLE_SIDE)
            continue
        side = min(SAMPLE_SIDE, *before.shape[:2], *after.shape[:2])
        before_after_png(Image.fromarray(centre_crop(before, side)), [(edit.done, Image.fromarray(centre_crop(after, side)))],
                         out_dir / "samples" / f"{index:02d}.png", cell=side)
    return report


def summary_text(report: dict, detail: str = "") -> str:
    """What 'edit restore' and 'edit enhance' print: counts and speed, ``detail``, the quarantined files, where
    the samples and the report are."""
    s = report["summary"]
    speed = f", {s['seconds_per_megapixel']:.2f} s per megapixel" if s["seconds_per_megapixel"] else ""
    lines = [f"{s['files']} files from {report['source']}: {s['edited']} {report['done']}, {s['quarantined']} "
             f"quarantined" + (f" ({s['resumed']} resumed from an earlier run)" if s["resumed"] else "") + speed]
    lines += [detail] if detail else []
    lines += [f"  quarantined: {row['source']}: {row['reason']}"
              for row in [r for r in report["photos"] if r["status"] == "quarantined"][:10]]
    lines.append(f"before/after ({report['samples']}): {report['out']}/samples/; report: {report['out']}/report.json")
    return "\n".join(lines)


def _edit_one(edit: FolderEdit, path: Path, rel: str, sha: str, out_dir: Path, max_pixels: int) -> dict:
    row = {"source": rel, "sha256": sha, "status": "quarantined", "reason": None}
    try:
        photo = read_photo(path, max_pixels)
    except BadImage as error:
        row["reason"] = str(error)
        return row
    started = time.perf_counter()
    try:
        result = edit.apply(photo)
        notes = None
        if isinstance(result, tuple):
            result, notes = result
    except DataError as error:  # a photo this edit cannot take (a style with no product to frame): say why
        row["reason"] = str(error)
        return row
    seconds = time.perf_counter() - started
    buffer = io.BytesIO()
    Image.fromarray(result).save(buffer, format="PNG")
    provenance = Provenance(EDITED, edit.model_name, f"sha256:{edit.digest[:16]}", source_sha256=sha,
                            created="", extra={"operation": edit.operation})
    file = Path(rel).with_suffix(".png")
    write_atomic(out_dir / file, with_provenance(buffer.getvalue(), provenance))
    row.update(status="edited", file=file.as_posix(), width=photo.shape[1], height=photo.shape[0],
               megapixels=photo.shape[0] * photo.shape[1] / 1e6, seconds=round(seconds, 3),
               change_db=change_db(photo, result) if result.shape == photo.shape else None)
    if notes:
        row["notes"] = notes
    return row
