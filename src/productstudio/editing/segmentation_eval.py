"""How good are the cut-outs? Our background removal against the plain pretrained model on the labelled set.

    report = evaluate_cutouts("data/edit/evalset", segmenter, settings.edit.cutout, out_dir="out/")
    report["summary"]["ours"]["iou_mean"], report["summary"]["plain"]["iou_min"], report["rows"][0]

Every image of the set (``editing.evalset``) is cut out twice, at its own size: with ``settings`` ("ours") and
with ``cutout.plain_settings`` ("plain": u2netp's map upsampled, as rembg returns it: no margin, no mirror
averaging, no clean-up, no edge refinement). Each alpha is compared with the exact mask: IoU (at 0.5), MAE
and the boundary F-measure (``metrics.mask_quality``). The summary gives, per variant, the mean, min and 10th
percentile of each, the number of images below ``IOU_FLOOR``, and the same per case (index.csv's ``case``).

With ``out_dir``: rows.csv (one row per image and variant) and worst_cases.png (photo | truth | ours | plain
for the ``WORST`` images where ours scored the lowest IoU).
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from productstudio.config import CutoutSettings, GateSettings
from productstudio.editing.compliance import gate_cutout
from productstudio.editing.cutout import cut_out, plain_settings
from productstudio.errors import MissingInput
from productstudio.metrics.mask_quality import boundary_f_measure, mask_iou, mask_mae, summarise

IOU_FLOOR = 0.85  # the target: no image below this
WORST = 8


def read_index(evalset_dir: Path) -> list[dict]:
    index = evalset_dir / "index.csv"
    if not index.is_file():
        raise MissingInput(f"{evalset_dir}: no index.csv; build the labelled set first (productstudio edit evalset)")
    with open(index, newline="") as handle:
        return list(csv.DictReader(handle))


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def score(alpha: np.ndarray, truth: np.ndarray) -> dict:
    return {"iou": mask_iou(alpha, truth), "mae": mask_mae(alpha, truth),
            "boundary_f": boundary_f_measure(alpha, truth)}


def variant_summary(rows: list[dict]) -> dict:
    """Flat figures for one variant: iou_mean, iou_min, iou_p10, mae_mean, boundary_f_mean, below_floor, count."""
    stats = summarise(rows)
    summary = {"count": len(rows)}
    for key, values in stats.items():
        for figure in ("mean", "min", "p10"):
            summary[f"{key}_{figure}"] = values[figure]
    summary["below_floor"] = sum(row["iou"] < IOU_FLOOR for row in rows)
    return summary


def worst_sheet(evalset_dir: Path, worst: list[dict], alphas: dict, thumb: int = 200) -> Image.Image:
    """One row per image: photo | truth | ours | plain, with its id, case and IoUs written on the photo."""
    sheet = Image.new("RGB", (4 * thumb, max(1, len(worst)) * thumb), "white")
    for row_index, row in enumerate(worst):
        ident = row["id"]
        photo = read_rgb(evalset_dir / "images" / f"{ident}.png")
        truth = read_mask(evalset_dir / "masks" / f"{ident}.png")
        ours, plain = alphas[ident]
        scale = thumb / max(photo.shape[:2])
        size = (max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale)))
        panels = [photo, truth, (ours * 255).astype(np.uint8), (plain * 255).astype(np.uint8)]
        for column, panel in enumerate(panels):
            small = cv2.resize(panel, size, interpolation=cv2.INTER_AREA)
            if small.ndim == 2:
                small = np.repeat(small[..., None], 3, axis=2)
            if column == 0:
                small = small.copy()
                text = f"{ident} {row['case']} ours {row['iou']:.2f} plain {row['plain_iou']:.2f}"
                cv2.putText(small, text, (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 0), 1, cv2.LINE_AA)
            sheet.paste(Image.fromarray(small), (column * thumb, row_index * thumb))
    return sheet


def gate_summary(rows: list[dict]) -> dict:
    """How well the gates sort cut-outs: a bad one (IoU under the floor) should be refused, a good one exported.
    ``accepted_*``: ours as a merchant sees them, after the gates."""
    out = {}
    for variant, prefix in (("ours", ""), ("plain", "plain_")):
        bad = [r for r in rows if r[f"{prefix}iou"] < IOU_FLOOR]
        good = [r for r in rows if r[f"{prefix}iou"] >= IOU_FLOOR]
        out[f"{variant}_bad"] = len(bad)
        out[f"{variant}_bad_refused"] = sum(bool(r[f"{prefix}refused"]) for r in bad)
        out[f"{variant}_good"] = len(good)
        out[f"{variant}_good_refused"] = sum(bool(r[f"{prefix}refused"]) for r in good)
    accepted = [r["iou"] for r in rows if not r["refused"]]
    out["accepted"] = len(accepted)
    out["accepted_iou_mean"] = float(np.mean(accepted)) if accepted else None
    out["accepted_iou_min"] = float(np.min(accepted)) if accepted else None
    return out


def evaluate_cutouts(evalset_dir: str | Path, segmenter, settings: CutoutSettings = CutoutSettings(),
                     out_dir: str | Path | None = None, limit: int | None = None,
                     gates: GateSettings | None = None) -> dict:
    """Ours vs plain u2netp on the labelled set: {"summary": {"ours": {...}, "plain": {...}, "cases": {...},
    "settings": {...}, "gates": {...}}, "rows": [per image: id, case, iou, mae, boundary_f, plain_iou, plain_mae,
    plain_boundary_f, refused, plain_refused]}. With ``gates``, each cut-out is also put through
    ``compliance.gate_cutout`` (refused: its reasons) and the summary says how many bad ones the gates caught."""
    evalset_dir = Path(evalset_dir)
    entries = read_index(evalset_dir)[:limit]
    plain = plain_settings(settings.work_size)
    rows, alphas = [], {}
    for entry in entries:
        ident = entry["id"]
        photo = read_rgb(evalset_dir / "images" / f"{ident}.png")
        truth = read_mask(evalset_dir / "masks" / f"{ident}.png")
        ours = cut_out(photo, segmenter, settings)
        plain_cut = cut_out(photo, segmenter, plain)
        ours_alpha, plain_alpha = ours.alpha, plain_cut.alpha
        row = {"id": ident, "case": entry.get("case", ""), **score(ours_alpha, truth)}
        row.update({f"plain_{key}": value for key, value in score(plain_alpha, truth).items()})
        if gates is not None:
            row["refused"] = "; ".join(gate_cutout(ours, gates))
            row["plain_refused"] = "; ".join(gate_cutout(plain_cut, gates))
        rows.append(row)
        alphas[ident] = (ours_alpha, plain_alpha)
    plain_rows = [{key[len("plain_"):]: value for key, value in row.items() if key.startswith("plain_")}
                  for row in rows]
    cases = {}
    for case in dict.fromkeys(row["case"] for row in rows):
        picked = [i for i, row in enumerate(rows) if row["case"] == case]
        cases[case] = {"ours": variant_summary([rows[i] for i in picked]),
                       "plain": variant_summary([plain_rows[i] for i in picked])}
    summary = {"ours": variant_summary(rows), "plain": variant_summary(plain_rows), "cases": cases,
               "settings": settings.model_dump(), "evalset": str(evalset_dir), "iou_floor": IOU_FLOOR}
    if gates is not None:
        summary["gates"] = gate_summary(rows)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "rows.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["id"])
            writer.writeheader()
            writer.writerows(rows)
        worst = sorted(rows, key=lambda row: row["iou"])[:WORST]
        worst_sheet(evalset_dir, worst, alphas).save(out_dir / "worst_cases.png")
    return {"summary": summary, "rows": rows}
