"""Step 'edit restore': a folder of photos -> the same photos with noise and JPEG artefacts removed, at full size."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step


def run(params, in_dir: Path, out: Path, restorer: Path, detector: Path | None, limit: int | None,
        watermarks: bool = False, always: bool = False, watermark_detector: Path | None = None) -> dict:
    from productstudio.editing.folder_edit import MODEL_NAME, FolderEdit, edit_folder, restore_digest
    from productstudio.editing.restore_gate import gated_restore
    from productstudio.errors import ParamsError
    from productstudio.models.restorer import load_restorer

    if in_dir is None:
        raise ParamsError("edit restore needs --in DIR: the folder of photos to restore")
    model = load_restorer(restorer)
    settings, steps = {"restorer": str(restorer)}, []
    marks = ""
    if watermarks or watermark_detector:  # first: the letters are sharpest before anything else touches the photo
        marks = watermark_step(params, watermark_detector, steps, settings)
    if detector:
        from productstudio.models.defect_detector import dust_filler, load_detector, mask_rule

        found, info = load_detector(detector)
        # dust first: the restorer softens a speck's edges, and the detector was trained on sharp ones
        steps.append(dust_filler(found, info, params.edit.dust_fill_radius))
        settings.update(detector=str(detector), **mask_rule(info), radius=params.edit.dust_fill_radius)
    gate = params.edit.restore_gate.model_copy(update={"enabled": False}) if always else params.edit.restore_gate
    settings.update(gate=gate.model_dump())

    def apply(photo):
        for step in steps:
            photo = step(photo)
        restored, verdict = gated_restore(model, photo, gate)  # a clean photo is left as it is
        return restored, {"restorer": verdict.as_dict()}
    digest = restore_digest(restorer, detector, params.edit.dust_fill_radius if detector else 0, gate)
    if marks:
        import hashlib

        digest = hashlib.sha256(f"{digest}:watermarks:{marks}".encode()).hexdigest()
    edit = FolderEdit("restore", "restored", MODEL_NAME, digest, apply, settings)
    return edit_folder(in_dir, out, edit, params.edit.max_pixels, limit=limit)


def watermark_step(params, learned: Path | None, steps: list, settings: dict) -> str:
    """Append the watermark removal to ``steps`` (OCR text boxes, or a learned detector's repeat-averaged mask with
    the letters read over the repeats, both un-blended), describe it in ``settings``; returns the digest of
    everything it depends on."""
    import hashlib

    from productstudio.editing import watermark
    from productstudio.models.pretrained import sha256_of

    radius = params.edit.dust_fill_radius
    if learned:
        from productstudio.models.defect_detector import mask_rule

        model, info = watermark.load_watermark_detector(learned)
        min_blob = mask_rule(info)["min_blob"]
        steps.append(lambda photo: watermark.remove_watermark_learned(photo, model, radius, min_blob))
        settings.update(watermarks=f"learned detector {learned} (probabilities averaged over the watermark's repeats, "
                                   f"threshold {watermark.REPEAT_THRESHOLD}, blobs from {min_blob} px, the letters "
                                   f"read over the repeats from {watermark.LETTER_LAYER} of the opacity), un-blended")
        source = (f"{sha256_of(Path(learned) / 'detector.safetensors')}:{watermark.REPEAT_THRESHOLD}:{min_blob}:"
                  f"{watermark.LETTER_LAYER}")
    else:
        from productstudio.models.pretrained import weights_dir
        from productstudio.models.text_detector import load_text_detector

        text_dir = weights_dir("ppocr-det")
        text_detector = load_text_detector(text_dir, threads=0)
        steps.append(lambda photo: watermark.remove_watermark(photo, text_detector, radius))
        settings.update(watermarks="OCR text boxes (ppocr-det) un-blended (the letters inpainted where no overlay "
                                   "is found)")
        source = (f"{sha256_of(text_dir / 'model.onnx')}:{watermark.STROKE_KERNEL}:{watermark.STROKE_LEVEL}:"
                  f"{watermark.LIMIT_SIDE}")
    return hashlib.sha256(f"{source}:{radius}:unblend:{watermark.unblend_constants()}".encode()).hexdigest()


def format(report: dict) -> str:
    from productstudio.editing.folder_edit import summary_text

    verdicts = [row["notes"]["restorer"] for row in report["photos"] if row.get("notes", {}).get("restorer")]
    left = sum(not v["restore"] for v in verdicts)
    detail = (f"  {len(verdicts) - left} went through the restorer (noisy or heavily compressed), {left} looked clean "
              "and came out unchanged (edit.restore_gate; --always restores every photo; the reasons are in "
              "report.json)") if verdicts else ""
    return summary_text(report, detail)


STEP = Step(
    name="restore",
    help="remove sensor noise and JPEG artefacts from a folder of photos with the learned restorer",
    description="Every photo under --in goes through the learned restorer ('edit restore-train' trains it; one "
    "blind model for noise and JPEG artefacts), at its full size in tiles, and is written to OUT/<same path>.png "
    "(lossless, with XMP provenance naming the model and its weights). OUT/report.json lists every file with how "
    "much the model changed it (PSNR to the input), OUT/quarantine.tsv the unusable files with a one-line reason, "
    "OUT/samples/ before/after crops at 1:1. Only photos that need it go through the restorer: one whose pixels "
    "show noise (sigma at least edit.restore_gate.noise_sigma) or JPEG compression below "
    "edit.restore_gate.jpeg_quality; a clean photo is written unchanged (--always restores every photo), and "
    "report.json says which and why. Sources are never modified; an interrupted run resumes where it stopped. With --detector, dust, specks and scratches are first found by the learned detector ('edit "
    "detect-train') and filled by inpainting. With --watermarks, text found by the OCR detector is removed first "
    "by un-blending (a semi-transparent white or black overlay is computed back out of the photo, its opacity "
    "estimated from the letters): only for your own images (a watermark you or your studio put there); "
    "--watermark-detector DIR uses a learned watermark detector instead of OCR (its probabilities averaged over "
    "the repeats of a tiled watermark, the letters read from the photo over the same repeats, then un-blended). bench/bench_watermark.py measures both. 'edit restore-eval' shows where the models beat the classical "
    "methods and what they do to clean photos.",
    run=run,
    format=format,
    params=("edit.max_pixels", "edit.dust_fill_radius", "edit.restore_gate"),
    args=(
        Arg("--in", "photo folder", type=Path, keyword="in_dir"),
        Arg("--out", "output folder", paths.EDIT_RESTORED),
        Arg("--restorer", "the trained restorer's folder", paths.EDIT_RESTORER),
        Arg("--detector", "also find and fill dust and scratches with this trained detector's folder "
            "(e.g. models/detector)", type=Path),
        Arg("--watermarks", "also remove text watermarks (OCR text boxes, un-blended) -- only from your own images",
            action="store_true"),
        Arg("--watermark-detector", "remove text watermarks with this learned detector's folder instead of OCR "
            "(trained by 'edit detect-train' with edit.detector.defects: [watermark]; finds more of the letters) -- "
            "only from your own images", type=Path),
        Arg("--always", "restore every photo, also those the gate finds clean (edit.restore_gate.enabled: false)",
            action="store_true"),
        Arg("--limit", "only the first N files (sorted paths)", type=int),
    ),
)
