"""The labelled evaluation set for background removal: studio cut-outs on real backgrounds, with exact masks.

    report = build_evalset("../shared/data/clothing-dataset-small", "data/edit/evalset", size=120, seed=0)

No labelled salient-object set installs offline, so the project makes one (the usual trick of matting sets):

1. **Sources.** Clothing photos (train + validation; the test photos are what the studio batch exports) are
   scanned in a seeded order. A photo qualifies when its border is a plain background: a smooth (planar) colour
   model fitted to the border strip explains the border to within a few Lab units. Its mask is the pixels far
   from that model (lightness counts half, so shading of a cloth background matters less than colour), opened,
   closed, holes filled. A photo is discarded unless the mask is clean: one part (specks aside), away from the
   border, between ``MIN_AREA`` and ``MAX_AREA`` of the photo, and few pixels near the threshold (a clear edge).
2. **Composites.** Each cut-out (alpha slightly feathered, then scaled) is pasted onto a background: a crop of
   another clothing photo enlarged so that no whole garment dominates, or a plain colour or gradient. The truth
   is the composite's own alpha: the image is ``round(fg * a + bg * (1 - a))`` with ``a`` the saved uint8 mask / 255.
3. **Cases** (cycled in a fixed order, written to index.csv): ``photo-background``, ``plain-background``,
   ``light-on-light`` (the lightest products on near-white), ``touching-edge`` (cut by one edge of the frame),
   ``filling-frame`` (the product's box covers ~90 % of the frame's tighter side). Then ``extra_hard`` more
   composites alternate two stand-ins for materials the clothing photos lack, on photo backgrounds:
   ``see-through`` (the product at 55-75 % opacity, as sheer fabric or glass: the background shows through, the
   truth is still the whole product) and ``reflective`` (25-40 % of the product's colour replaced by a blurred
   mirror image of its surroundings, as on a glossy or metallic surface). They come after the others, so adding
   them leaves the first ``size`` composites as they were.

Output (same inputs + seed -> byte-identical files):

    images/<id>.png   RGB composite            masks/<id>.png   uint8 0..255 truth alpha
    index.csv         id, source, background, case, width, height
    contact_sheet.png composite | mask overlay, for checking by eye
    report.json       what was scanned, kept and why photos were discarded
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from productstudio.errors import MissingInput

SPLITS = ("train", "validation")
CASES_CYCLE = ("photo-background", "photo-background", "plain-background", "light-on-light", "photo-background",
               "touching-edge", "photo-background", "filling-frame", "plain-background", "photo-background")
EXTRA_HARD_CYCLE = ("see-through", "reflective")
CANVASES = ((400, 533), (480, 480), (533, 400), (360, 480))  # (width, height)
SOURCE_SIDE = 533  # sources are read at most this long (the clothing photos are 400x533)
BORDER = 0.03  # the border strip that defines the background, as a share of the shorter side
MAX_BORDER_NOISE = 10.0  # 95th percentile of the border's distance to its colour model (Lab units)
MIN_AREA, MAX_AREA = 0.08, 0.6  # the product's share of the source photo
MAX_AMBIGUOUS = 0.06  # share of the product's pixels whose distance is within a factor 2 of the threshold
LIGHT = 175  # mean grey level from which a product counts as light (for the light-on-light case)


@dataclass
class Source:
    path: Path
    rgb: np.ndarray  # (h, w, 3) uint8, cropped to the product's box plus a margin
    mask: np.ndarray  # (h, w) uint8 0/1, same crop
    lightness: float  # the product's mean grey level


def list_photos(photos_root: Path, splits: tuple[str, ...]) -> list[Path]:
    photos = sorted(p for split in splits for p in (photos_root / split).rglob("*.jpg"))
    if not photos:
        raise MissingInput(f"{photos_root}: no .jpg photos under {', '.join(splits)}")
    return photos


def read_photo(path: Path, side: int = SOURCE_SIDE) -> np.ndarray:
    with Image.open(path) as image:
        image.draft("RGB", (side, side))  # JPEG: decode at a reduced scale when the photo is much larger
        image = image.convert("RGB")
        scale = side / max(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        return np.asarray(image)


def border_model(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """A planar colour model (3, 3) of the border strip in weighted Lab, and the border's 95th-percentile
    distance to it (how plain the background is). Only the strip is read: cheap for the many photos that fail."""
    height, width = rgb.shape[:2]
    strip = max(3, round(BORDER * min(height, width)))
    border = np.zeros((height, width), bool)
    border[:strip], border[-strip:], border[:, :strip], border[:, -strip:] = True, True, True, True
    lab = weighted_lab(rgb[border][None])[0]
    ys, xs = np.nonzero(border)
    design = np.stack([np.ones(len(xs), np.float32), xs / width, ys / height], axis=1).astype(np.float32)
    coef, *_ = np.linalg.lstsq(design, lab, rcond=None)
    distance = np.linalg.norm(lab - design @ coef, axis=1)
    return coef.astype(np.float32), float(np.percentile(distance, 95))


def weighted_lab(rgb: np.ndarray) -> np.ndarray:
    """Lab (OpenCV's 8-bit scale) with lightness halved: shading on a cloth is not a product."""
    lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] *= 0.5
    return lab


def background_distance(rgb: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Per pixel, the weighted-Lab distance to the border's colour model."""
    height, width = rgb.shape[:2]
    lab = weighted_lab(rgb)
    lab -= coef[0]
    lab -= (np.arange(width, dtype=np.float32) / width)[None, :, None] * coef[1]
    lab -= (np.arange(height, dtype=np.float32) / height)[:, None, None] * coef[2]
    return np.linalg.norm(lab, axis=2)


def threshold_mask(rgb: np.ndarray) -> tuple[np.ndarray | None, str]:
    """A photo's exact product mask (uint8 0/1) by thresholding, or (None, why it is not clean)."""
    coef, noise = border_model(rgb)
    if noise > MAX_BORDER_NOISE:
        return None, "background not plain"
    distance = background_distance(rgb, coef)
    threshold = max(12.0, 3.0 * noise)
    mask = (distance > threshold).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return None, "no product"
    areas = stats[1:, cv2.CC_STAT_AREA]
    largest = 1 + int(np.argmax(areas))
    if areas.sum() - areas.max() > 0.01 * areas.max():
        return None, "several parts"
    mask = (labels == largest).astype(np.uint8)
    # fill holes: background regions not connected to the border
    flood = np.pad(1 - mask, 1, constant_values=1)
    cv2.floodFill(flood, None, (0, 0), 2)
    mask[flood[1:-1, 1:-1] == 1] = 1
    if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
        return None, "touches the border"
    area = mask.mean()
    if not MIN_AREA <= area <= MAX_AREA:
        return None, "too small" if area < MIN_AREA else "too large"
    near = (distance > threshold / 2) & (distance < threshold * 2) & (mask > 0)
    if np.count_nonzero(near) > MAX_AMBIGUOUS * np.count_nonzero(mask):
        return None, "unclear edge"
    return mask, ""


def cut_source(path: Path) -> tuple[Source | None, str]:
    rgb = read_photo(path)
    mask, why = threshold_mask(rgb)
    if mask is None:
        return None, why
    ys, xs = np.nonzero(mask)
    margin = 2  # room for the feathered edge
    y0, y1 = max(0, ys.min() - margin), min(rgb.shape[0], ys.max() + 1 + margin)
    x0, x1 = max(0, xs.min() - margin), min(rgb.shape[1], xs.max() + 1 + margin)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return Source(path, rgb[y0:y1, x0:x1].copy(), mask[y0:y1, x0:x1].copy(), float(grey[mask > 0].mean())), ""


def plain_background(rng: random.Random, width: int, height: int, light: bool) -> tuple[np.ndarray, str]:
    """A plain colour or a linear gradient; near-white when ``light``."""
    def colour():
        if light:
            return np.array([rng.uniform(225, 255)] * 3) + np.array([rng.uniform(-6, 6) for _ in range(3)])
        return np.array([rng.uniform(0, 255) for _ in range(3)])

    start, end = colour(), colour() if rng.random() < 0.5 else None
    if end is None:
        return np.broadcast_to(np.clip(start, 0, 255).round().astype(np.uint8), (height, width, 3)).copy(), \
            "plain:" + "-".join(str(int(c)) for c in start.round())
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xs / width * np.cos(angle) + ys / height * np.sin(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = start[None, None] * (1 - t[..., None]) + end[None, None] * t[..., None]
    return np.clip(image, 0, 255).round().astype(np.uint8), "gradient"


def photo_background(rng: random.Random, photos: list[Path], exclude: Path, width: int,
                     height: int) -> tuple[np.ndarray, str]:
    """A corner crop (25-40 % of each side) of another clothing photo, enlarged to the canvas: mostly the floor,
    bed or wall it was shot on, with at most a part of its garment (a whole second garment would make "the
    product" ambiguous, which no background remover can answer)."""
    path = photos[rng.randrange(len(photos))]
    while path == exclude:
        path = photos[rng.randrange(len(photos))]
    rgb = read_photo(path)
    h, w = rgb.shape[:2]
    crop_w, crop_h = round(w * rng.uniform(0.25, 0.4)), round(h * rng.uniform(0.25, 0.4))
    x0 = 0 if rng.random() < 0.5 else w - crop_w
    y0 = 0 if rng.random() < 0.5 else h - crop_h
    crop = rgb[y0:y0 + crop_h, x0:x0 + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_CUBIC), path.name


def place(rng: random.Random, source: Source, case: str, width: int, height: int) -> tuple[float, int, int]:
    """The product's scale and its top-left corner on the canvas for ``case``."""
    h, w = source.mask.shape
    if case == "filling-frame":
        scale = rng.uniform(0.86, 0.94) * min(width / w, height / h)
    else:
        area = rng.uniform(0.12, 0.4) * width * height
        scale = min(np.sqrt(area / (w * h)), 0.9 * min(width / w, height / h))
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    x = rng.randrange(1, max(2, width - new_w))
    y = rng.randrange(1, max(2, height - new_h))
    if case == "filling-frame":
        x, y = (width - new_w) // 2, (height - new_h) // 2
    if case == "touching-edge":  # push it over one edge by 8-25 % of its size
        edge = rng.randrange(4)
        over_x, over_y = round(new_w * rng.uniform(0.08, 0.25)), round(new_h * rng.uniform(0.08, 0.25))
        x, y = [(x, -over_y), (x, height - new_h + over_y), (-over_x, y), (width - new_w + over_x, y)][edge]
    return scale, x, y


def composite(source: Source, background: np.ndarray, scale: float, x: int, y: int, opacity: float = 1.0,
              reflection: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The product pasted at (x, y) with its alpha: (image uint8 (H, W, 3), mask uint8 (H, W)). ``opacity`` < 1
    lets the background show through the product; ``reflection`` > 0 mixes a blurred mirror image of the
    background into the product's colours. The mask (the truth) is the product's own alpha either way."""
    height, width = background.shape[:2]
    alpha = cv2.GaussianBlur(source.mask.astype(np.float32), (0, 0), 0.7)  # a slightly soft, real-looking edge
    h, w = source.mask.shape
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    product = cv2.resize(source.rgb, (new_w, new_h), interpolation=interpolation)
    alpha = cv2.resize(alpha, (new_w, new_h), interpolation=interpolation)
    mask = np.zeros((height, width), np.uint8)
    fg = np.zeros((height, width, 3), np.uint8)
    cx0, cy0 = max(0, x), max(0, y)
    cx1, cy1 = min(width, x + new_w), min(height, y + new_h)
    mask[cy0:cy1, cx0:cx1] = np.clip(alpha[cy0 - y:cy1 - y, cx0 - x:cx1 - x] * 255 + 0.5, 0, 255).astype(np.uint8)
    fg[cy0:cy1, cx0:cx1] = product[cy0 - y:cy1 - y, cx0 - x:cx1 - x]
    a = mask.astype(np.float32)[..., None] / 255
    fg = fg.astype(np.float32)
    if reflection > 0:
        mirrored = cv2.GaussianBlur(background[::-1, ::-1].astype(np.float32), (0, 0), 6)
        fg = fg * (1 - reflection) + mirrored * reflection
    a_seen = a * opacity
    image = np.clip(fg * a_seen + background * (1 - a_seen) + 0.5, 0, 255).astype(np.uint8)
    return image, mask


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def contact_sheet(items: list[tuple[str, str, np.ndarray, np.ndarray]], thumb: int = 160,
                  columns: int = 6) -> Image.Image:
    """Pairs of (composite | composite with the mask's outside darkened and its edge in green)."""
    rows = (len(items) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * 2 * thumb, rows * thumb), "white")
    for index, (_, _, image, mask) in enumerate(items):
        scale = thumb / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        small_mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA).astype(np.float32)[..., None] / 255
        overlay = (small * (0.25 + 0.75 * small_mask)).astype(np.uint8)
        edge = cv2.morphologyEx((small_mask[..., 0] >= 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3)))
        overlay[edge > 0] = (0, 255, 0)
        col, row = index % columns, index // columns
        sheet.paste(Image.fromarray(small), (col * 2 * thumb, row * thumb))
        sheet.paste(Image.fromarray(overlay), (col * 2 * thumb + thumb, row * thumb))
    return sheet


def build_evalset(photos_root: str | Path, out_dir: str | Path, size: int = 120, seed: int = 0,
                  splits: tuple[str, ...] = SPLITS, extra_hard: int = 0) -> dict:
    """Build the labelled set (see the module doc) into ``out_dir``; returns the report (also report.json)."""
    photos_root, out_dir = Path(photos_root), Path(out_dir)
    photos = list_photos(photos_root, splits)
    rng = random.Random(seed)
    order = photos.copy()
    rng.shuffle(order)
    cases = [CASES_CYCLE[i % len(CASES_CYCLE)] for i in range(size)]
    cases += [EXTRA_HARD_CYCLE[i % len(EXTRA_HARD_CYCLE)] for i in range(extra_hard)]
    wanted_light = cases.count("light-on-light")
    # scan in the seeded order until there is one source per composite (light ones for the light cases)
    sources: list[Source] = []
    discarded: dict[str, int] = {}
    scanned = 0
    for path in order:
        light = sum(s.lightness >= LIGHT for s in sources)
        if len(sources) >= size and light >= wanted_light:
            break
        scanned += 1
        source, why = cut_source(path)
        if source is None:
            discarded[why] = discarded.get(why, 0) + 1
        else:
            sources.append(source)
    if not sources:
        raise MissingInput(f"{photos_root}: no photo on a plain background among {scanned} scanned")
    light_pool = sorted((s for s in sources if s.lightness >= LIGHT), key=lambda s: s.path)
    if not light_pool:  # fall back to the lightest products there are
        light_pool = sorted(sources, key=lambda s: -s.lightness)[:max(1, wanted_light)]
    other_pool = [s for s in sources if s.lightness < LIGHT] or sources

    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rows, items = [], []
    counters = {"light": 0, "other": 0}
    for index, case in enumerate(cases):
        case_rng = random.Random(f"{seed}:{index}")  # each composite reproducible on its own
        if case == "light-on-light":
            source = light_pool[counters["light"] % len(light_pool)]
            counters["light"] += 1
        else:
            source = other_pool[counters["other"] % len(other_pool)]
            counters["other"] += 1
        width, height = CANVASES[case_rng.randrange(len(CANVASES))]
        if case in ("plain-background", "light-on-light"):
            background, background_name = plain_background(case_rng, width, height, light=case == "light-on-light")
        else:
            background, background_name = photo_background(case_rng, photos, source.path, width, height)
        scale, x, y = place(case_rng, source, case, width, height)
        opacity = case_rng.uniform(0.55, 0.75) if case == "see-through" else 1.0
        reflection = case_rng.uniform(0.25, 0.4) if case == "reflective" else 0.0
        image, mask = composite(source, background, scale, x, y, opacity, reflection)
        ident = f"{index:04d}"
        (out_dir / "images" / f"{ident}.png").write_bytes(png_bytes(image))
        (out_dir / "masks" / f"{ident}.png").write_bytes(png_bytes(mask))
        rows.append({"id": ident, "source": str(source.path.relative_to(photos_root)), "background": background_name,
                     "case": case, "width": width, "height": height})
        items.append((ident, case, image, mask))
    with open(out_dir / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    contact_sheet(items).save(out_dir / "contact_sheet.png", optimize=False, compress_level=6)
    report = {"images": len(rows), "scanned": scanned, "sources": len(sources), "light_sources": len(light_pool),
              "discarded": dict(sorted(discarded.items())), "splits": list(splits), "seed": seed,
              "cases": {case: cases.count(case) for case in dict.fromkeys(cases)}}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")  # no paths: byte-reproducible
    return {**report, "out": str(out_dir)}
