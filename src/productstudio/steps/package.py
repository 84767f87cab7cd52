"""Step 'package': a TorchServe .mar of the generator (fp32 or int8), from a registry alias or a local directory."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step


def serve_model_name(params) -> str:
    """The model's name inside TorchServe: serve.model_name, else the registered name."""
    return params.serve.model_name or params.register.model_name


EDIT_MODEL_NAME = "studio-edit"
RESTORE_MODEL_NAME = "studio-restore"


def style_provenance(params, look: Path | None, style_image: Path | None) -> dict:
    """What the served edit task needs for 'look' and 'paint': the catalogue look and the style code (100 numbers,
    computed here once), as JSON in the archive's serving.json."""
    from dataclasses import asdict

    extra = {}
    if look:
        from productstudio.editing.style import CatalogueLook

        extra["look"] = asdict(CatalogueLook.load(look))
    if style_image:
        from productstudio.editing.style import style_image_code
        from productstudio.models.pretrained import weights_dir
        from productstudio.models.stylizer import load_stylizer

        stylizer = load_stylizer(weights_dir("magenta-style-predict"), weights_dir("magenta-style-transform"))
        code, image_sha256 = style_image_code(stylizer, Path(style_image), params.edit.max_pixels)
        extra.update(style_code=[float(v) for v in code], style_image_sha256=image_sha256)
    return extra


def learned_editor_files(restorer: Path, detector: Path | None) -> tuple[tuple[Path, ...], dict]:
    """The restorer's (and optional detector's) files for an archive, and their sha256 for serving.json; a missing
    or broken model fails here, not in the worker."""
    from productstudio.editing.folder_edit import weights_digest
    from productstudio.models.restorer import load_restorer

    load_restorer(restorer)
    files, learned = [Path(restorer) / "restorer.safetensors", Path(restorer) / "restorer.json"], \
        {"weights_sha256": weights_digest(restorer)}
    if detector:  # dust and scratches found and filled before the restorer runs, as 'edit restore --detector'
        from productstudio.models.defect_detector import load_detector

        load_detector(detector)
        files += [Path(detector) / "detector.safetensors", Path(detector) / "detector.json"]
        learned["detector_sha256"] = weights_digest(detector, "detector.safetensors")
    return tuple(files), learned


def watermark_detector_files(detector: Path, staging: Path) -> tuple[Path, dict]:
    """A folder to archive that holds the learned watermark detector as ``watermark-detector/``, and its sha256 for
    serving.json; a detector of other defects fails here, not in the worker."""
    import shutil

    from productstudio.editing.folder_edit import weights_digest
    from productstudio.editing.watermark import load_watermark_detector
    from productstudio.serving.tasks.edit import WATERMARK_DETECTOR_DIR  # the dust detector's files sit at the root

    load_watermark_detector(detector)
    folder = staging / WATERMARK_DETECTOR_DIR
    folder.mkdir(parents=True)
    for file in ("detector.safetensors", "detector.json"):
        shutil.copyfile(Path(detector) / file, folder / file)
    return staging, {"watermark_detector_sha256": weights_digest(detector, "detector.safetensors")}


def run(params, task: str, alias: str | None, variant: str | None, generator: Path | None, int8: Path | None,
        name: str | None, store: Path, restorer: Path | None = None, detector: Path | None = None,
        look: Path | None = None, style_image: Path | None = None, watermark_detector: Path | None = None) -> dict:
    from productstudio.serving.archive import archive_from_registry, build_archive

    if watermark_detector and task != "edit":
        from productstudio.errors import ParamsError

        raise ParamsError("--watermark-detector serves operation 'watermark-removal' of the edit task: use --task edit")
    if task == "edit":  # the pretrained editing nets, installed by 'make install', and the edit settings
        import tempfile

        from productstudio.config import section_dict
        from productstudio.editing.studio import model_version
        from productstudio.models.pretrained import weights_root

        provenance = {"edit": section_dict(params.edit), "weights": model_version(),
                      **style_provenance(params, look, style_image)}
        extra = ()
        if restorer:  # operation 'restore' (with dust filled first when a detector comes too)
            extra, learned = learned_editor_files(restorer, detector)
            provenance.update(learned)
        elif detector:
            from productstudio.errors import ParamsError

            raise ParamsError("--detector fills dust before the restorer: give --restorer too")
        with tempfile.TemporaryDirectory(prefix="productstudio-watermark-") as staging:
            if watermark_detector:  # operation 'watermark-removal' then un-blends its mask instead of OCR boxes
                folder, learned = watermark_detector_files(watermark_detector, Path(staging))
                extra, provenance = (*extra, folder), {**provenance, **learned}
            mar = build_archive(weights_root(), store, name or EDIT_MODEL_NAME, "fp32", task="edit",
                                provenance=provenance, extra=extra)
        from productstudio.serving.tasks.edit import archive_offer

        offer = archive_offer(mar)
        return {"mar": mar, "variant": "edit", "source": f"{weights_root()} and params.yaml 'edit'",
                "operations": offer["operations"], "watermark_removal": offer["watermark_removal"]}
    if task == "restore":  # the trained restorer, with the edit section's upload limits
        source = restorer or paths.EDIT_RESTORER
        files, learned = learned_editor_files(source, detector)
        provenance = {"max_upload_bytes": params.edit.max_upload_bytes, "max_pixels": params.edit.max_pixels,
                      "dust_fill_radius": params.edit.dust_fill_radius,
                      "restore_gate": params.edit.restore_gate.model_dump(), **learned}
        # the restorer's own files are the task's (archive_files); the detector's join them
        mar = build_archive(source, store, name or RESTORE_MODEL_NAME, "fp32", task="restore",
                            provenance=provenance, extra=files[2:])
        return {"mar": mar, "variant": "restore", "source": str(source) + (f" + {detector}" if detector else "")}
    name = name or serve_model_name(params)
    if generator or int8:
        source, variant = (int8, "int8") if int8 else (generator, "fp32")
        mar = build_archive(source, store, name, variant)
    else:
        variant = variant or params.serve.variant
        source = f"models:/{params.register.model_name}@{alias or params.serve.alias}"
        mar = archive_from_registry(source, store, variant, name)
    return {"mar": mar, "variant": variant, "source": source}


def format(result: dict) -> str:
    if result["variant"] == "edit":
        return (f"{result['mar']}: the edit task from {result['source']}; operations (X-Operation): "
                f"{', '.join(result['operations'])}; watermark-removal by {result['watermark_removal']}")
    if result["variant"] == "restore":
        return f"{result['mar']}: the restore task (noise, JPEG and, with a detector, dust removal) from {result['source']}"
    return f"{result['mar']}: {result['variant']} generator from {result['source']}"


STEP = Step(
    name="package",
    help="build a TorchServe .mar of the generator (fp32 or int8), of the edit task or of the restore task",
    description="--task edit archives the studio editor (the pretrained nets in .tools/weights and params.yaml "
    "'edit': presets, gates, limits), which also enhances photos, and with --look (a look.json from 'edit "
    "style') or --style-image gives them a catalogue look or a painterly style (--watermark-detector: a learned watermark detector for operation 'watermark-removal'); --task restore archives the trained restorer (--restorer, default "
    "models/restorer; with --detector, also the dust and scratch detector) with the edit section's upload limits. By default archives models:/<register.model_name>@<serve.alias> (variant serve.variant) from the "
    "MLflow registry; --generator or --int8 archive a local directory instead. The archive holds the project's "
    "handler, the weights (safetensors or ONNX, never a pickle) and config.json.",
    run=run,
    format=format,
    params=("serve", "register.model_name", "edit"),
    args=(
        Arg("--task", "what the archive serves: generate (images from the GAN), edit (studio exports of photos) or "
            "restore (noise and JPEG removal)", "generate", str, choices=("generate", "edit", "restore")),
        Arg("--alias", "registry alias (default: serve.alias)", type=str),
        Arg("--variant", "registered variant (default: serve.variant)", type=str, choices=("fp32", "int8")),
        Arg("--generator", "archive this fp32 generator directory (e.g. models/train/generator)"),
        Arg("--int8", "archive this int8 directory (e.g. models/quantized)"),
        Arg("--name", "model name in TorchServe (default: serve.model_name or register.model_name; edit: studio-edit; restore: studio-restore)",
            type=str),
        Arg("--store", "where the .mar goes", paths.SERVE_STATE / "model-store"),
        Arg("--restorer", "--task restore: the trained restorer's folder (default: models/restorer); --task edit: "
            "also serve it as operation 'restore'"),
        Arg("--detector", "--task restore or edit (with --restorer): also find and fill dust and scratches first, "
            "with this trained detector's folder (e.g. models/detector)"),
        Arg("--look", "--task edit: serve this catalogue look (a look.json written by 'edit style') as operation "
            "'look'"),
        Arg("--style-image", "--task edit: serve this picture's painterly style as operation 'paint'"),
        Arg("--watermark-detector", "--task edit: operation 'watermark-removal' un-blends what this learned watermark "
            "detector finds (averaged over the watermark's repeats; e.g. models/watermark-detector) instead of OCR "
            "text boxes. Only for the merchant's own images"),
    ),
)
