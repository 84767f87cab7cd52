"""The restoration and enhancement evaluation table: every synthetic defect x every method, tuned honestly.

    report = evaluate_restoration(photos_root, out_dir, RestoreEvalSettings(), segmenter)

Protocol (what a learned restorer or enhancer must beat, measured in the same run):
- Clean references: centre crops of ``crop`` px from the photos at their own size (the clothing photos are
  already about 400 px wide, downscaled from phone originals). ``tune_crops`` crops from the train and
  validation folders choose each method's parameters; ``test_crops`` crops from the test folder (never tuned
  on) are what the table reports.
- Defects (``editing.defects``): each (crop, defect) pair has its own seeded generator, recorded in the report.
- Methods (``editing.classical``): every method of a defect's family, with its best parameters for that defect
  (highest mean PSNR on the tuning crops); "none" (the damaged input itself) is the floor. Learned models
  (``learned_method``: the restorer, trained on train photos only; ``gated_method``: the same restorer behind
  the gate that leaves a crop without noise or heavy JPEG compression as it is, what 'edit restore' runs;
  ``detect_and_fill_method``: the defect detector's mask filled by inpainting; ``ocr_watermark_method``: the
  pretrained OCR detector's text boxes un-blended, the served default; ``learned_watermark_method``: the learned
  watermark detector's repeat-averaged mask, the letters read over the repeats, un-blended) join their families'
  rows.
  ``gate_shares``: the share of the test crops the gate sends to the restorer, per defect and for clean crops.
  "background-white" (white balance from the background outside the product, which the cut-out finds on the
  damaged crop) is the enhancement 'edit enhance' applies; it joins the colour-cast rows.
- The detectors' own scores (``detector_scores``, ``watermark_detector_scores``): recall of the dust (watermark)
  mask's pixels (all, and the visible ones), false-positive area, and the share of a clean crop it marks.
- Per row: PSNR and SSIM against the clean crop (the metric engine's ``psnr``/``ssim``); harm on clean input
  (the same method and parameters on the clean crop: PSNR to itself, "identical" when unchanged, and the mean
  CIEDE2000 colour shift inside the product, whose mask comes from the studio cut-out); milliseconds per
  megapixel on this machine.

Writes ``table.md``, ``rows.json``, ``metrics.json`` (the best PSNR per defect and its margin over "none", for
DVC) and ``examples.png`` (clean | damaged | best method, one row per defect).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from productstudio.artifacts import write_json_atomic
from productstudio.config import RestoreEvalSettings
from productstudio.data.images import BadImage, centre_crop, open_image, to_mode, upright
from productstudio.editing.classical import Method, grid, methods_for
from productstudio.editing.defects import DEFECTS, defect_rng
from productstudio.metrics.engine import MetricOptions, calc_metric

TUNE_OFFSET = 100_000  # tuning crops draw their defects from other streams than test crops
IDENTICAL_DB = 100.0  # PSNR reported for the per-image mean when a method leaves a crop unchanged
MAX_PIXELS = 40_000_000


def load_crops(root: Path, splits: tuple[str, ...], size: int, count: int) -> tuple[list[str], list[np.ndarray]]:
    """``count`` crops from photos spread evenly over the sorted list of ``root/<split>/**``; unusable files and
    photos smaller than the crop are passed over (and named in the returned list's absence)."""
    photos = sorted(p for split in splits for p in (root / split).rglob("*") if p.is_file())
    names, crops = [], []
    if not photos:
        return names, crops
    for index in np.linspace(0, len(photos) - 1, num=min(len(photos), count * 2)).round().astype(int):
        if len(crops) == count:
            break
        path = photos[index]
        try:
            with open_image(path, MAX_PIXELS) as image:
                rgb = np.asarray(to_mode(upright(image), "RGB"))
        except BadImage:
            continue
        crop = centre_crop(rgb, size)
        if crop is not None and path.relative_to(root).as_posix() not in names:
            names.append(path.relative_to(root).as_posix())
            crops.append(crop)
    return names, crops


def damage(crops: list[np.ndarray], defect: str, seed: int, offset: int = 0):
    """The damaged crops, their defect masks (None where the defect has none) and what was drawn."""
    results = [DEFECTS[defect].apply(crop, defect_rng(seed, offset + i, defect)) for i, crop in enumerate(crops)]
    return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]


def nchw(images: list[np.ndarray]) -> np.ndarray:
    return np.stack(images).transpose(0, 3, 1, 2)


def mean_psnr(outputs: list[np.ndarray], references: list[np.ndarray]) -> float:
    """Mean per-image PSNR through the metric engine; a crop left unchanged counts as ``IDENTICAL_DB``."""
    record = calc_metric("psnr", MetricOptions(images=nchw(outputs), references=nchw(references), data_range=255.0))
    if np.isfinite(record["value"]):
        return record["value"]
    finite, count = record["mean_finite"], record["num_images"]
    unchanged = sum(np.array_equal(o, r) for o, r in zip(outputs, references))
    finite_part = finite * (count - unchanged) if unchanged < count else 0.0
    return (finite_part + IDENTICAL_DB * unchanged) / count


def mean_ssim(outputs: list[np.ndarray], references: list[np.ndarray]) -> float:
    return calc_metric("ssim", MetricOptions(images=nchw(outputs), references=nchw(references),
                                             data_range=255.0))["value"]


def run_method(method: Method, images: list[np.ndarray], params: dict, masks: list) -> list[np.ndarray]:
    return [method.run(image, params, mask) for image, mask in zip(images, masks)]


def tune(method: Method, damaged: list[np.ndarray], masks: list, clean: list[np.ndarray]) -> tuple[dict, float]:
    """The parameters of ``method.grid`` with the highest mean PSNR on the tuning crops."""
    scored = [(mean_psnr(run_method(method, damaged, params, masks), clean), i)
              for i, params in enumerate(method.grid)]
    best_psnr, best = max(scored)
    return dict(method.grid[best]), best_psnr


def delta_e_inside(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean CIEDE2000 between two RGB images over ``mask`` (the product)."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    if not mask.any():
        mask = np.ones(mask.shape, bool)
    return float(deltaE_ciede2000(rgb2lab(a[mask][None]), rgb2lab(b[mask][None])).mean())


def product_masks(crops: list[np.ndarray], segmenter, cutout_settings) -> list[np.ndarray]:
    from productstudio.editing.cutout import cut_out

    return [cut_out(crop, segmenter, cutout_settings).alpha >= 0.5 for crop in crops]


def harm_on_clean(method: Method, params: dict, clean: list[np.ndarray], products: list[np.ndarray]) -> dict:
    empty = [np.zeros(c.shape[:2], bool) for c in clean]  # a clean photo has no defect to mask
    outputs = run_method(method, clean, params, empty)
    unchanged = all(np.array_equal(o, c) for o, c in zip(outputs, clean))
    psnr = "identical" if unchanged else round(mean_psnr(outputs, clean), 2)
    shift = float(np.mean([delta_e_inside(o, c, m) for o, c, m in zip(outputs, clean, products)]))
    return {"clean_psnr": psnr, "clean_delta_e": round(shift, 3)}


def examples_sheet(clean: list[np.ndarray], examples: dict, thumb: int = 160) -> Image.Image:
    """One row per defect: clean | damaged | best method's output (the first test crop)."""
    sheet = Image.new("RGB", (3 * thumb, len(examples) * (thumb + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (defect, (damaged, best_name, restored)) in enumerate(examples.items()):
        y = r * (thumb + 16)
        for c, (image, label) in enumerate([(clean[0], "clean"), (damaged, defect), (restored, best_name)]):
            sheet.paste(Image.fromarray(image).resize((thumb, thumb), Image.LANCZOS), (c * thumb, y + 16))
            draw.text((c * thumb + 3, y + 2), label[:26], fill=(0, 0, 0))
    return sheet


def markdown_table(rows: list[dict]) -> str:
    lines = ["| defect | method | params | PSNR dB | SSIM | gain dB | clean PSNR | clean dE00 | ms/MP |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items()) or "-"
        lines.append(f"| {row['defect']} | {row['method']}{' *' if row['best'] else ''} | {params} | "
                     f"{row['psnr']:.2f} | {row['ssim']:.4f} | {row['gain_db']:+.2f} | {row['clean_psnr']} | "
                     f"{row['clean_delta_e']:.2f} | {row['ms_per_mp']:.0f} |")
    return "\n".join(lines) + "\n\n* best for the defect (highest test PSNR other than none)\n"


def gate_line(gate: dict | None) -> str:
    if not gate:
        return ""
    shares = ", ".join(f"{name} {share['restored']:.0%}" for name, share in gate["test_crops"].items())
    return f"\nThe restorer's gate (edit.restore_gate) sends these shares of the test crops to the restorer: {shares}.\n"


def detector_line(scores: dict | None, what: str = "learned defect detector") -> str:
    if not scores:
        return ""
    return (f"\nThe {what} (threshold {scores['threshold']}, blobs of at least "
            f"{scores.get('min_blob', 1)} pixels) on the {scores['defect']} test crops: "
            f"recall {scores['recall']:.3f} of the defect pixels, {scores['visible_recall']:.3f} of the visible "
            f"ones (changed by more than 12 levels); false-positive area {scores['false_positive_area']:.4f}; on "
            f"the clean crops it marks {scores['clean_area']:.4f} of the pixels.\n")


def learned_method(model, name: str = "restorer (learned)") -> Method:
    """A trained restorer as a row of the table: no parameters to tune (its training was on train photos)."""
    from productstudio.models.restorer import restore

    return Method(name, ("noise", "jpeg"), lambda image, params, mask=None: restore(model, image), ({},))


def gated_method(model, gate, name: str = "restorer (learned, gated)") -> Method:
    """The restorer behind its gate (``editing.restore_gate``): a crop with neither noise nor heavy JPEG
    compression in its pixels is returned as it is; what 'edit restore' and the served task do."""
    from productstudio.editing.restore_gate import gated_restore

    return Method(name, ("noise", "jpeg"), lambda image, params, mask=None: gated_restore(model, image, gate)[0], ({},))


def gate_shares(gate, clean: list[np.ndarray], damaged: dict[str, list[np.ndarray]]) -> dict:
    """The share of test crops the gate sends to the restorer, per defect and for the clean crops (which it
    should leave alone), with the range of what it read."""
    from productstudio.editing.restore_gate import inspect

    shares = {}
    for name, crops in {"clean": clean, **damaged}.items():
        verdicts = [inspect(crop, gate) for crop in crops]
        sigmas = [v.noise_sigma for v in verdicts]
        steps = [v.jpeg_step for v in verdicts if v.jpeg_step is not None]
        shares[name] = {"restored": round(float(np.mean([v.restore for v in verdicts])), 4),
                        "noise_sigma": [round(min(sigmas), 2), round(max(sigmas), 2)],
                        "jpeg_step": [min(steps), max(steps)] if steps else None,
                        "no_jpeg_grid": sum(v.jpeg_step is None for v in verdicts)}
    return shares


def background_white_method(segmenter, cutout_settings) -> Method:
    """White balance from the background outside the product, the product found by the studio cut-out on
    the damaged photo itself (as ``edit enhance`` does); the Minkowski norm tuned like shades-of-gray's."""
    from productstudio.editing.classical import background_white_balance
    from productstudio.editing.enhance import product_mask

    masks: dict[bytes, np.ndarray] = {}  # one cut-out per crop, not one per grid point

    def run(image, params, mask=None):
        key = image.tobytes()
        if key not in masks:
            masks[key] = product_mask(image, segmenter, cutout_settings)
        return background_white_balance(image, masks[key], params["p"])
    return Method("background-white", ("cast",), run, tuple(grid(p=[1, 2, 4, 8])))


def detect_and_fill_method(model, info: dict, name: str = "inpaint-ns-learned-detector") -> Method:
    """A trained defect detector as a row: its mask (at its stored threshold) filled by Navier-Stokes
    inpainting, the radius tuned like the classical inpainting rows'."""
    from productstudio.models.defect_detector import fill_defects, mask_rule

    rule = mask_rule(info)

    def run(image, params, mask=None):
        return fill_defects(model, image, radius=params["radius"], **rule)
    return Method(name, tuple(info["defects"]), run, tuple(grid(radius=[2, 3, 5])))


def ocr_watermark_method(text_detector, name: str = "unblend-ocr-boxes") -> Method:
    """What the served watermark removal does without a learned detector: the OCR detector's text boxes
    un-blended (``editing.watermark.remove_watermark``); pretrained weights, nothing trained here."""
    from productstudio.editing.watermark import remove_watermark

    return Method(name, ("watermark",), lambda image, params, mask=None: remove_watermark(image, text_detector), ({},))


def learned_watermark_method(model, info: dict, name: str = "unblend-learned-watermark-detector") -> Method:
    """The learned watermark detector as a row: its probabilities averaged over the watermark's repeats,
    thresholded, the letters read over the repeats and un-blended (``remove_watermark_learned``), what 'edit
    restore --watermark-detector' and the served task run; the inpainting radius of the partly covered pixels
    tuned like the other fills'."""
    from productstudio.editing.watermark import remove_watermark_learned
    from productstudio.models.defect_detector import mask_rule

    min_blob = mask_rule(info)["min_blob"]

    def run(image, params, mask=None):
        return remove_watermark_learned(image, model, params["radius"], min_blob)
    return Method(name, ("watermark",), run, tuple(grid(radius=[2, 3, 5])))


def watermark_detector_scores(model, info: dict, clean: list[np.ndarray], seed: int) -> dict:
    """The learned watermark detector's mask (``learned_watermark_mask``) against the true letters on the test
    crops, and the share of pixels it marks on the clean crops."""
    from productstudio.editing.detector_training import mask_scores, visible
    from productstudio.editing.watermark import REPEAT_THRESHOLD, learned_watermark_mask
    from productstudio.models.defect_detector import mask_rule

    min_blob = mask_rule(info)["min_blob"]
    damaged, masks, _ = damage(clean, "watermark", seed)
    found = [learned_watermark_mask(image, model, min_blob=min_blob) for image in damaged]
    seen = [visible(d, c, m) for d, c, m in zip(damaged, clean, masks)]
    marked_clean = sum(int(learned_watermark_mask(c, model, min_blob=min_blob).sum()) for c in clean)
    return {"defect": "watermark", "threshold": REPEAT_THRESHOLD, "min_blob": min_blob, **mask_scores(found, masks, seen),
            "clean_area": marked_clean / sum(c.shape[0] * c.shape[1] for c in clean)}


def detector_scores(model, info: dict, clean: list[np.ndarray], defect: str, seed: int) -> dict:
    """The detector's mask against the true one on the test crops (recall, visible recall, false-positive
    area) and the share of pixels it marks on the clean crops (a clean photo should get nothing)."""
    from productstudio.editing.detector_training import mask_scores, visible
    from productstudio.models.defect_detector import detect_defects, mask_rule

    damaged, masks, _ = damage(clean, defect, seed)
    rule = mask_rule(info)
    found = [detect_defects(model, image, **rule) for image in damaged]
    seen = [visible(d, c, m) for d, c, m in zip(damaged, clean, masks)]
    marked_clean = sum(int(detect_defects(model, c, **rule).sum()) for c in clean)
    return {"defect": defect, **rule, **mask_scores(found, masks, seen),
            "clean_area": marked_clean / sum(c.shape[0] * c.shape[1] for c in clean)}


def evaluate_restoration(photos_root: str | Path, out_dir: str | Path, settings: RestoreEvalSettings, segmenter,
                         cutout_settings, defects: list[str] | None = None, progress: bool = True,
                         learned: list[Method] = (), detector: tuple | None = None, restore_gate=None,
                         watermark_detector: tuple | None = None, baselines: list[Method] = ()) -> dict:
    """The table (see the module's docstring). ``learned``: rows of models trained here; ``baselines``: more
    rows that are not (pretrained ones, e.g. ``ocr_watermark_method``); ``detector`` and ``watermark_detector``:
    (model, info) of the learned detectors whose masks are scored."""
    from tqdm import tqdm

    photos_root, out_dir = Path(photos_root), Path(out_dir)
    tune_names, tune_clean = load_crops(photos_root, ("train", "validation"), settings.crop, settings.tune_crops)
    test_names, test_clean = load_crops(photos_root, ("test",), settings.crop, settings.test_crops)
    if not tune_clean or not test_clean:
        from productstudio.errors import MissingInput

        raise MissingInput(f"{photos_root}: needs train/validation and test photos of at least {settings.crop} px")
    products = product_masks(test_clean, segmenter, cutout_settings)
    megapixels = sum(c.shape[0] * c.shape[1] for c in test_clean) / 1e6
    rows, examples, drawn, gate_inputs = [], {}, {}, {}
    names = defects or list(DEFECTS)
    background_white = background_white_method(segmenter, cutout_settings)
    for defect in tqdm(names, desc="restore-eval", unit="defect", disable=not progress):
        family = DEFECTS[defect].family
        tune_damaged, tune_masks, _ = damage(tune_clean, defect, settings.seed, TUNE_OFFSET)
        test_damaged, test_masks, drawn[defect] = damage(test_clean, defect, settings.seed)
        if family in ("noise", "jpeg"):
            gate_inputs[defect] = test_damaged
        defect_rows, outputs = [], {}
        extra = [m for m in [background_white, *baselines, *learned] if family in m.families]
        for method in [*methods_for(family), *extra]:
            params, tune_psnr = tune(method, tune_damaged, tune_masks, tune_clean)
            started = time.perf_counter()
            restored = run_method(method, test_damaged, params, test_masks)
            seconds = time.perf_counter() - started
            psnr, ssim = mean_psnr(restored, test_clean), mean_ssim(restored, test_clean)
            outputs[method.name] = restored[0]
            defect_rows.append({"defect": defect, "family": family, "method": method.name, "params": params,
                                "tune_psnr": round(tune_psnr, 3), "psnr": round(psnr, 3), "ssim": round(ssim, 4),
                                "ms_per_mp": round(1000 * seconds / megapixels, 1),
                                "true_mask": method.needs_mask, "learned": method in learned,
                                **harm_on_clean(method, params, test_clean, products)})
        floor = next(r["psnr"] for r in defect_rows if r["method"] == "none")
        best = max((r for r in defect_rows if r["method"] != "none"), key=lambda r: r["psnr"], default=None)
        for row in defect_rows:
            row["gain_db"] = round(row["psnr"] - floor, 3)
            row["best"] = row is best
        rows.extend(sorted(defect_rows, key=lambda r: -r["psnr"]))
        if best is not None:
            examples[defect] = (test_damaged[0], best["method"], outputs[best["method"]])
    metrics = {}
    for defect in names:
        best = next((r for r in rows if r["defect"] == defect and r["best"]), None)
        if best is not None:
            metrics[f"best_psnr_{defect}"] = best["psnr"]
            metrics[f"best_gain_db_{defect}"] = best["gain_db"]
    report = {"photos": str(photos_root), "settings": settings.model_dump(), "tune_crops": tune_names,
              "test_crops": test_names, "defects_drawn": drawn, "rows": rows, "metrics": metrics}
    if restore_gate is not None:
        report["restore_gate"] = {"settings": restore_gate.model_dump(),
                                  "test_crops": gate_shares(restore_gate, test_clean, gate_inputs)}
    if detector is not None and "dust" in names:
        report["detector"] = scores = detector_scores(*detector, test_clean, "dust", settings.seed)
        metrics.update({f"detector_{k}": round(v, 5) for k, v in scores.items()
                        if k in ("recall", "visible_recall", "false_positive_area", "clean_area")})
    if watermark_detector is not None and "watermark" in names:
        report["watermark_detector"] = scores = watermark_detector_scores(*watermark_detector, test_clean, settings.seed)
        metrics.update({f"watermark_detector_{k}": round(v, 5) for k, v in scores.items()
                        if k in ("recall", "visible_recall", "false_positive_area", "clean_area")})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "rows.json", report)
    write_json_atomic(out_dir / "metrics.json", metrics)
    (out_dir / "table.md").write_text(markdown_table(rows) + gate_line(report.get("restore_gate"))
                                      + detector_line(report.get("detector"))
                                      + detector_line(report.get("watermark_detector"), "learned watermark detector"))
    if examples:
        examples_sheet(test_clean, examples).save(out_dir / "examples.png")
    return report
