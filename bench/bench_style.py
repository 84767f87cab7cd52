"""Benchmark: catalogue look and painterly style, measured as issue 11 asks (KID to the references, DeltaE2000
drift inside the product), every method beside the baselines in one run.

Catalogue look. A merchant's catalogue is simulated from train photos the way a studio would shoot it, by a
construction that is *not* the look code: each photo's cut-out is placed by the studio compose (``edit studio``)
on a white 4:5 canvas at 72 % fill, and the catalogue's bright, soft tone is a fixed curve on the whole image
(linear light ** 0.8). The look is then *measured* from those references (``fit_look``) and applied to test
photos. Rows:

- unchanged: the test photos as shot;
- studio white: the ``amazon-main`` preset (square, white, 88 % fill): what ``edit studio`` gives today;
- look, tone s: ``apply_look`` with tone strength s (0: white balance, background and framing only).

KID (x 1000, Inception pool features of the whole frame, 100 subsets) is to the reference photos; lower is
closer to the catalogue. DeltaE2000 drift is the mean colour difference inside the product between the photo and
its recoloured version (before reframing): what the product's colour pays for the look; the chroma shift is the
same in CIELAB a*b* alone (hue and saturation, lightness ignored).

Painterly. A generated style image (strong blue and orange strokes; nothing to download), each test photo
painted with preserve = none / colour / background: DeltaE2000 inside the product (the colour a shopper sees)
and outside it (how much of the style the backdrop got).

Prints a table and writes bench/results/style.json (with the command, the commit and the load).

    python bench/bench_style.py                       # ~4 minutes on 2 cores
    python bench/bench_style.py --references 20 --photos-per-method 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REFERENCE_TONE = 0.8  # the simulated catalogue's tone: linear light ** 0.8 (brighter mid-tones, same white)


def style_image(side: int = 256, seed: int = 0) -> np.ndarray:
    """A painterly test pattern: blue and orange strokes of random directions (seeded)."""
    import cv2

    rng = np.random.default_rng(seed)
    image = np.full((side, side, 3), (30, 60, 160), np.uint8)
    for _ in range(120):
        x, y = rng.integers(0, side, 2)
        angle, length = rng.uniform(0, np.pi), rng.integers(10, 60)
        colour = (240, 140, 30) if rng.random() < 0.5 else (20, 90, 220)
        end = (int(x + length * np.cos(angle)), int(y + length * np.sin(angle)))
        cv2.line(image, (int(x), int(y)), end, colour, int(rng.integers(2, 8)))
    return image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "clothing-dataset-small")
    parser.add_argument("--references", type=int, default=40, help="train photos made into the catalogue")
    parser.add_argument("--photos-per-method", type=int, default=60, help="test photos styled by each method")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "style.json")
    args = parser.parse_args()

    from productstudio.config import CutoutSettings, PresetSettings
    from productstudio.editing.compose import compose
    from productstudio.editing.cutout import cut_out
    from productstudio.editing.defects import to_linear, to_srgb
    from productstudio.editing.restoration_eval import delta_e_inside
    from productstudio.editing.studio import read_photo
    from productstudio.editing.style import apply_look, chroma_shift, fit_look, paint
    from productstudio.metrics.engine import fid_kid_from_features
    from productstudio.metrics.features import extract_features
    from productstudio.models.pretrained import weights_dir
    from productstudio.models.salient import load_segmenter
    from productstudio.models.stylizer import load_stylizer

    import cv2
    from tqdm import tqdm

    segmenter = load_segmenter(weights_dir("u2netp"), threads=0)
    cutout_settings = CutoutSettings()

    def photos(split: str, count: int) -> list[np.ndarray]:
        files = sorted((args.photos / split).rglob("*.jpg"))
        step = max(1, len(files) // count)
        return [read_photo(path, 40_000_000) for path in files[::step][:count]]

    def features(images: list[np.ndarray]) -> np.ndarray:
        # whole frames at the network's size (a frame's aspect is part of a catalogue's look)
        batch = np.stack([cv2.resize(image, (299, 299), interpolation=cv2.INTER_AREA) for image in images]).transpose(0, 3, 1, 2)
        return extract_features(batch, batch_size=20, progress=False)

    catalogue_preset = PresetSettings(width=800, height=1000, fill=0.72, role="main")
    references = []
    for photo in tqdm(photos("train", args.references), desc="catalogue", unit="photo"):
        placed = np.asarray(compose(cut_out(photo, segmenter, cutout_settings), catalogue_preset).image)
        references.append(to_srgb(np.power(to_linear(placed), REFERENCE_TONE)))
    look = fit_look(references, segmenter, cutout_settings)
    reference_features = features(references)
    test = photos("test", args.photos_per_method)

    def kid(images: list[np.ndarray]) -> float:
        result = fid_kid_from_features(features(images), reference_features, kid_subset_size=1000, kid_subsets=100)
        return round(1000 * result["kid"], 2)

    rows = []
    studio_preset = PresetSettings(width=1000, height=1000, fill=0.88, role="main")
    studio = [np.asarray(compose(cut_out(photo, segmenter, cutout_settings), studio_preset).image)
              for photo in tqdm(test, desc="studio white", unit="photo")]
    rows.append({"method": "unchanged", "kid_x1000": kid(test), "delta_e_product": 0.0})
    rows.append({"method": "studio white (amazon-main)", "kid_x1000": kid(studio), "delta_e_product": 0.0})
    rows[0]["chroma_shift_product"] = rows[1]["chroma_shift_product"] = 0.0
    variants = [(False, 0.0)] + [(True, strength) for strength in args.strengths]
    for balance, strength in variants:
        name = f"look, tone {strength:g}" + ("" if balance else ", no white balance")
        styled, drift, hue, seconds, megapixels = [], [], [], 0.0, 0.0
        for photo in tqdm(test, desc=name, unit="photo"):
            started = time.perf_counter()
            result = apply_look(photo, look, segmenter, cutout_settings, strength, balance=balance)
            seconds += time.perf_counter() - started
            megapixels += photo.shape[0] * photo.shape[1] / 1e6
            styled.append(result.image)
            drift.append(delta_e_inside(photo, result.recoloured, result.product))
            hue.append(chroma_shift(photo, result.recoloured, result.product))
        rows.append({"method": name, "kid_x1000": kid(styled), "delta_e_product": round(float(np.mean(drift)), 2),
                     "chroma_shift_product": round(float(np.mean(hue)), 2),
                     "seconds_per_megapixel": round(seconds / megapixels, 3)})

    stylizer = load_stylizer(weights_dir("magenta-style-predict"), weights_dir("magenta-style-transform"), threads=0)
    code = stylizer.style_code(style_image())
    painterly = []
    for preserve in ("none", "colour", "background"):
        inside, hue, outside, seconds, megapixels = [], [], [], 0.0, 0.0
        for photo in tqdm(test, desc=f"paint, preserve {preserve}", unit="photo"):
            started = time.perf_counter()
            result = paint(photo, stylizer, code, preserve, 1.0, segmenter, cutout_settings)
            seconds += time.perf_counter() - started
            megapixels += photo.shape[0] * photo.shape[1] / 1e6
            inside.append(delta_e_inside(photo, result.image, result.product))
            hue.append(chroma_shift(photo, result.image, result.product))
            if (~result.product).any():
                outside.append(delta_e_inside(photo, result.image, ~result.product))
        painterly.append({"preserve": preserve, "delta_e_product": round(float(np.mean(inside)), 2),
                          "chroma_shift_product": round(float(np.mean(hue)), 2),
                          "delta_e_background": round(float(np.mean(outside)), 2),
                          "seconds_per_megapixel": round(seconds / megapixels, 3)})

    print(f"catalogue look measured on {len(references)} references: background {look.background}, "
          f"fill {look.fill}, aspect {look.aspect}, tone {look.tone}")
    print(f"{'method':<36} {'KID x1000':>10} {'dE product':>11} {'chroma shift':>13} {'s/MP':>7}")
    for row in rows:
        speed = f"{row['seconds_per_megapixel']:.2f}" if "seconds_per_megapixel" in row else ""
        print(f"{row['method']:<36} {row['kid_x1000']:>10.2f} {row['delta_e_product']:>11.2f} "
              f"{row['chroma_shift_product']:>13.2f} {speed:>7}")
    print(f"\n{'painterly, preserve':<36} {'dE product':>11} {'chroma shift':>13} {'dE background':>14} {'s/MP':>7}")
    for row in painterly:
        print(f"{row['preserve']:<36} {row['delta_e_product']:>11.2f} {row['chroma_shift_product']:>13.2f} "
              f"{row['delta_e_background']:>14.2f} {row['seconds_per_megapixel']:>7.2f}")

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    result = {"command": " ".join(["python", *sys.argv]), "commit": commit, "load_average": os.getloadavg(),
              "references": len(references), "test_photos": len(test), "look": look.__dict__,
              "catalogue": rows, "painterly": painterly}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
