"""Restoring a folder of photos with the learned restorer (noise and JPEG artefacts), at each photo's full size.

    report = restore_batch(in_dir, out_dir, load_restorer("models/restorer"), weights_sha256)

    out/<relative path>.png       the restored photo, lossless, with XMP provenance (an edit by a trained model)
    out/report.json               every file: restored (with how much it changed) or quarantined (one-line reason)
    out/quarantine.tsv            files that are not usable images, with the reason (as validation does)
    out/samples/<n>.png           before / after at 1:1 (a 256 px centre crop: noise does not show in a thumbnail)
    out/records/                  one finished photo per file: an interrupted run resumes from them

Sources are only read, never written; the output folder may not lie inside the photo folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from productstudio.artifacts import write_atomic, write_json_atomic
from productstudio.data.images import BadImage, centre_crop
from productstudio.editing.contact_sheet import before_after_png
from productstudio.editing.provenance import EDITED, Provenance, with_provenance
from productstudio.editing.studio import list_photos, read_photo
from productstudio.errors import MissingInput, ParamsError
from productstudio.models.restorer import psnr, restore

MODEL_NAME = "product-studio-restorer"
SAMPLES = 6
SAMPLE_SIDE = 256


def weights_digest(directory: str | Path) -> str:
    """The restorer's identity in provenance and resume records: the sha256 of its weights file."""
    return hashlib.sha256((Path(directory) / "restorer.safetensors").read_bytes()).hexdigest()


def change_db(before: np.ndarray, after: np.ndarray) -> float:
    """PSNR of the output against the input: how much the model changed (100 when it left the photo alone)."""
    return round(psnr(before, after), 2)


def restore_batch(in_dir: str | Path, out_dir: str | Path, model, weights_sha256: str, max_pixels: int,
                  limit: int | None = None, progress: bool = True) -> dict:
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
    for path in tqdm(photos, desc="restore", unit="photo", disable=not progress):
        rel = path.relative_to(in_dir).as_posix()
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        record = records / f"{hashlib.sha256((rel + sha + weights_sha256).encode()).hexdigest()[:24]}.json"
        if record.is_file():
            row = json.loads(record.read_text())
            if row["status"] != "restored" or (out_dir / row["file"]).is_file():
                rows.append(row)
                resumed += 1
                continue
        rows.append(_restore_one(model, path, rel, sha, out_dir, weights_sha256, max_pixels))
        write_json_atomic(record, rows[-1])
    restored = [r for r in rows if r["status"] == "restored"]
    megapixels = sum(r["megapixels"] for r in restored)
    summary = {"files": len(rows), "restored": len(restored), "quarantined": len(rows) - len(restored),
               "resumed": resumed, "megapixels": round(megapixels, 3),
               "seconds_per_megapixel": round(sum(r["seconds"] for r in restored) / megapixels, 3) if megapixels else None}
    report = {"source": str(in_dir), "out": str(out_dir), "model": MODEL_NAME, "weights_sha256": weights_sha256,
              "summary": summary, "photos": rows}
    write_json_atomic(out_dir / "report.json", report)
    (out_dir / "quarantine.tsv").write_text("path\treason\n" + "".join(
        f"{r['source']}\t{r['reason']}\n" for r in rows if r["status"] == "quarantined"))
    for index, row in enumerate(restored[:SAMPLES]):
        before = read_photo(in_dir / row["source"], max_pixels)
        after = read_photo(out_dir / row["file"], max_pixels)
        side = min(SAMPLE_SIDE, *before.shape[:2])
        before_after_png(Image.fromarray(centre_crop(before, side)), [("restored", Image.fromarray(centre_crop(after, side)))],
                         out_dir / "samples" / f"{index:02d}.png", cell=side)
    return report


def _restore_one(model, path: Path, rel: str, sha: str, out_dir: Path, weights_sha256: str, max_pixels: int) -> dict:
    row = {"source": rel, "sha256": sha, "status": "quarantined", "reason": None}
    try:
        photo = read_photo(path, max_pixels)
    except BadImage as error:
        row["reason"] = str(error)
        return row
    started = time.perf_counter()
    restored = restore(model, photo)
    seconds = time.perf_counter() - started
    buffer = io.BytesIO()
    Image.fromarray(restored).save(buffer, format="PNG")
    provenance = Provenance(EDITED, MODEL_NAME, f"sha256:{weights_sha256[:16]}", source_sha256=sha,
                            created="", extra={"operation": "restore"})
    file = Path(rel).with_suffix(".png")
    write_atomic(out_dir / file, with_provenance(buffer.getvalue(), provenance))
    row.update(status="restored", file=file.as_posix(), width=photo.shape[1], height=photo.shape[0],
               megapixels=photo.shape[0] * photo.shape[1] / 1e6, seconds=round(seconds, 3),
               change_db=change_db(photo, restored))
    return row
