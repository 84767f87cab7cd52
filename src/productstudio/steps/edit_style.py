"""Step 'edit style': a folder of photos -> the same photos in a catalogue look (matched to reference photos) or a
painterly style (for ad creatives)."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step

LOOK_RECIPE = "product-studio-catalogue-look"  # provenance's name for the recipe (measured look, u2netp cut-out)
PAINT_MODEL = "magenta-arbitrary-style"  # provenance's name for the painterly network


def read_references(folder: Path, max_pixels: int) -> tuple[list, list[str]]:
    """The usable photos under ``folder`` and a one-line reason for each file that is not one."""
    from productstudio.data.images import BadImage
    from productstudio.editing.studio import list_photos, read_photo

    photos, refused = [], []
    for path in list_photos(folder):
        try:
            photos.append(read_photo(path, max_pixels))
        except BadImage as error:
            refused.append(f"{path.relative_to(folder)}: {error}")
    return photos, refused


def run(params, in_dir: Path, out: Path, references: Path | None, look: Path | None, style_image: Path | None,
        preserve: str | None, tone_strength: float | None, strength: float | None, limit: int | None) -> dict:
    import hashlib
    import json

    from pydantic import ValidationError

    from productstudio.editing.folder_edit import FolderEdit, edit_folder
    from productstudio.editing.style import LOOK_FILE, CatalogueLook, apply_look, fit_look, paint, style_image_code
    from productstudio.errors import MissingInput, ParamsError
    from productstudio.models.pretrained import sha256_of, weights_dir
    from productstudio.models.salient import load_segmenter

    if in_dir is None:
        raise ParamsError("edit style needs --in DIR: the folder of photos to style")
    if sum(x is not None for x in (references, look, style_image)) != 1:
        raise ParamsError("edit style needs one of --references DIR (a catalogue look measured on those photos), "
                          "--look FILE (a look.json measured before) or --style-image FILE (a painterly style)")
    updates = {key: value for key, value in
               {"preserve": preserve, "tone_strength": tone_strength, "strength": strength}.items()
               if value is not None}
    try:
        settings = params.edit.style.model_validate({**params.edit.style.model_dump(), **updates})
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ParamsError(f"--{key.replace('_', '-')} {updates.get(key)!r}: {first['msg']}") from None
    cutout_settings = params.edit.cutout
    segmenter_dir = weights_dir("u2netp")
    segmenter = load_segmenter(segmenter_dir, threads=0)
    out.mkdir(parents=True, exist_ok=True)
    recorded = {**settings.model_dump(), "cutout": cutout_settings.model_dump()}
    refused = []
    if style_image is not None:
        from productstudio.models.stylizer import load_stylizer

        predict_dir, transform_dir = weights_dir("magenta-style-predict"), weights_dir("magenta-style-transform")
        stylizer = load_stylizer(predict_dir, transform_dir, threads=0)
        code, image_sha256 = style_image_code(stylizer, style_image, params.edit.max_pixels)
        recorded.update(mode="painterly", style_image=str(style_image), style_image_sha256=image_sha256)
        identity = sha256_of(predict_dir / "model.onnx") + sha256_of(transform_dir / "model.onnx") + code.tobytes().hex()
        operation, done, name = "paint", "painted", PAINT_MODEL

        def apply(photo):
            return paint(photo, stylizer, code, settings.preserve, settings.strength, segmenter, cutout_settings).image
    else:
        if look is not None:
            catalogue = CatalogueLook.load(look)
        else:
            if not references.is_dir():
                raise MissingInput(f"{references}: no such reference folder")
            photos, refused = read_references(references, params.edit.max_pixels)
            catalogue = fit_look(photos, segmenter, cutout_settings)
        catalogue.save(out / LOOK_FILE)
        recorded.update(mode="catalogue", look=json.loads((out / LOOK_FILE).read_text()),
                        references_refused=refused)
        identity = json.dumps(recorded["look"], sort_keys=True)  # a look read back from look.json is the same look
        operation, done, name = "style", "styled", LOOK_RECIPE

        def apply(photo):
            return apply_look(photo, catalogue, segmenter, cutout_settings, settings.tone_strength,
                              settings.white_balance, settings.white_balance_p).image
    # what decides the pixels: the settings, the look (or the style networks and code) and the cut-out net
    deciding = json.dumps({**settings.model_dump(), "cutout": cutout_settings.model_dump()}, sort_keys=True)
    digest = hashlib.sha256((deciding + identity + sha256_of(segmenter_dir / "model.onnx")).encode()).hexdigest()
    edit = FolderEdit(operation, done, name, digest, apply, recorded, whole_samples=True)
    return edit_folder(in_dir, out, edit, params.edit.max_pixels, limit=limit)


def format(report: dict) -> str:
    from productstudio.editing.folder_edit import summary_text

    settings = report["settings"]
    if settings["mode"] == "painterly":
        detail = f"painterly style of {settings['style_image']}, preserve {settings['preserve']}, " \
                 f"strength {settings['strength']:g}"
    else:
        look = settings["look"]
        detail = (f"catalogue look of {look['references']} reference photos: background {tuple(look['background'])}, "
                  f"aspect {look['aspect']:g}, fill {look['fill']:g}, tone strength {settings['tone_strength']:g} "
                  f"(saved as {report['out']}/look.json)")
        detail += "".join(f"\n  reference not used: {reason}" for reason in settings["references_refused"])
    return summary_text(report, detail)


STEP = Step(
    name="style",
    help="give a folder of photos your catalogue's look (from reference photos) or a painterly style for ads",
    description="Catalogue look (--references DIR, or --look FILE saved by an earlier run): the look is measured "
    "on the reference photos (their background colour, frame aspect, how much of the frame the product fills and "
    "the products' tone) and every photo under --in gets it: the cut-out product reframed on the look's background at the look's "
    "aspect and fill; optionally the light seen on its background divided out (edit.style.white_balance) and the "
    "product's tone moved edit.style.tone_strength of the way to the references' (both off by default: "
    "bench/bench_style.py measured that each costs the product's colour without bringing the photos closer to "
    "the catalogue). Painterly "
    "(--style-image FILE): Magenta's arbitrary-style network paints each photo like the style image; "
    "--preserve colour (default) keeps the photo's own colours and paints only light and texture, background "
    "keeps the product untouched and paints the rest, none paints the whole frame (for backdrops: it changes "
    "the product's colours). Writes OUT/<same path>.png (lossless, with XMP provenance), OUT/report.json, "
    "OUT/quarantine.tsv (unusable files and photos with no product, one-line reasons), OUT/samples/ (before/"
    "after) and OUT/look.json. Sources are never modified; an interrupted run resumes.",
    run=run,
    format=format,
    params=("edit.style", "edit.cutout", "edit.max_pixels"),
    args=(
        Arg("--in", "photo folder", type=Path, keyword="in_dir"),
        Arg("--out", "output folder", paths.EDIT_STYLED),
        Arg("--references", "catalogue look: a folder of reference photos to measure the look on", type=Path),
        Arg("--look", "catalogue look: a look.json written by an earlier 'edit style' run", type=Path),
        Arg("--style-image", "painterly: the picture whose style to paint with", type=Path),
        Arg("--preserve", "painterly, overriding edit.style.preserve: colour, background or none", type=str),
        Arg("--tone-strength", "catalogue look, overriding edit.style.tone_strength: 0-1", type=float),
        Arg("--strength", "painterly, overriding edit.style.strength: 0-1", type=float),
        Arg("--limit", "only the first N files (sorted paths)", type=int),
    ),
)
