"""Benchmark: studio exports of real photos, beside a plain-resize reference measured in the same run.

Targets (issue 10): at least 2 photos/s for a 1024 px studio export on 2 cores (one ONNX session per worker,
the mask shared by every preset); memory bounded for a 24 MP photo; on the labelled set, mean mask IoU >= 0.95
and no image below 0.85, beating plain u2netp; every known-bad cut-out refused; every export that passes the
gates meets its preset's rules.

    python bench/bench_edit.py [--photos DIR] [--count 40] [--workers 2] [--evalset data/edit/evalset]

Reference: the same photos decoded, resized with Lanczos into the same 1024 px white canvas and encoded as JPEG
(what a merchant gets without background removal). Prints a table and writes bench/results/edit.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PRESET = "studio-1024"


def _settings(params: Path):
    from productstudio.config import load_params

    return load_params(params).edit


# Worker processes: one editor (one ONNX session per net, one thread) each, loaded once.
_EDITOR = None


def _init_worker(params: str) -> None:
    global _EDITOR
    os.environ["OMP_NUM_THREADS"] = "1"
    from productstudio.editing.studio import StudioEditor

    _EDITOR = StudioEditor.load(_settings(Path(params)), threads=1)


def _studio_one(path: str) -> dict:
    from productstudio.editing.studio import read_photo, select_presets

    start = time.perf_counter()
    photo = read_photo(Path(path), _EDITOR.settings.max_pixels)
    edited = _EDITOR.edit(photo, select_presets(_EDITOR.settings, [PRESET]), created="")
    return {"seconds": time.perf_counter() - start, "refused": edited.refused,
            "passed": [e.passed for e in edited.exports],
            "checks_failed": [rule for e in edited.exports for rule, c in e.checks.items() if not c["ok"]]}


def _reference_one(path: str) -> dict:
    from productstudio.editing.studio import read_photo

    start = time.perf_counter()
    photo = Image.fromarray(read_photo(Path(path), 40_000_000))
    canvas = Image.new("RGB", (1024, 1024), (255, 255, 255))
    scale = 0.85 * 1024 / max(photo.size)
    resized = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.LANCZOS)
    canvas.paste(resized, ((1024 - resized.width) // 2, (1024 - resized.height) // 2))
    canvas.save(io.BytesIO(), format="JPEG", quality=92, subsampling=0)
    return {"seconds": time.perf_counter() - start}


def throughput(paths: list[str], workers: int, params: Path, job) -> tuple[float, list[dict]]:
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(str(params),)) as pool:
        list(pool.map(job, paths[:workers]))  # warm-up: sessions loaded, first-run allocations done
        start = time.perf_counter()
        results = list(pool.map(job, paths))
        elapsed = time.perf_counter() - start
    return len(paths) / elapsed, results


def stage_times(paths: list[str], params: Path) -> dict:
    """Per-stage seconds per photo on one thread (medians): where the time goes."""
    from productstudio.editing.compliance import check_export
    from productstudio.editing.compose import compose, encode_export
    from productstudio.editing.cutout import cut_out
    from productstudio.editing.studio import StudioEditor, product_view, read_photo

    settings = _settings(params)
    editor = StudioEditor.load(settings, threads=1)
    preset = settings.preset_table[PRESET]
    times: dict[str, list[float]] = {"decode": [], "cut_out": [], "text_detection": [], "compose_encode_check": []}
    for path in paths:
        t0 = time.perf_counter()
        photo = read_photo(Path(path), settings.max_pixels)
        t1 = time.perf_counter()
        cutout = cut_out(photo, editor.segmenter, settings.cutout)
        t2 = time.perf_counter()
        boxes = editor.text_detector.detect(product_view(cutout))
        t3 = time.perf_counter()
        composed = compose(cutout, preset)
        check_export(encode_export(composed, preset), preset, composed, boxes)
        t4 = time.perf_counter()
        for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key].append(seconds)
    return {key: float(np.median(values)) for key, values in times.items()}


MEMORY_CHILD = """
import resource, sys, numpy as np
from pathlib import Path
from PIL import Image
from productstudio.config import load_params
from productstudio.editing.studio import StudioEditor, read_photo, select_presets
settings = load_params(sys.argv[2]).edit
mode, path = sys.argv[1], Path(sys.argv[3])
if mode == "studio":
    editor = StudioEditor.load(settings, threads=1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    edited = editor.edit(read_photo(path, settings.max_pixels), select_presets(settings, ["amazon-main"]), created="")
    assert edited.refused or edited.exports
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    photo = Image.fromarray(read_photo(path, settings.max_pixels))
    photo.thumbnail((1600, 1600), Image.LANCZOS)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, base)
"""


def memory_24mp(photo: Path, params: Path, tmp: Path) -> dict:
    """Peak RSS of one process editing a 24 MP photo (6000x4000) vs one that only decodes and resizes it."""
    big = tmp / "24mp.jpg"
    with Image.open(photo) as image:
        image.convert("RGB").resize((4000, 6000) if image.height > image.width else (6000, 4000),
                                    Image.BICUBIC).save(big, quality=90)
    out = {}
    for mode in ("studio", "reference"):
        result = subprocess.run([sys.executable, "-c", MEMORY_CHILD, mode, str(params), str(big)], capture_output=True,
                                text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        peak_kb, base_kb = map(int, result.stdout.split())
        out[mode] = {"peak_mb": round(peak_kb / 1024, 1), "above_loaded_mb": round((peak_kb - base_kb) / 1024, 1)}
    out["ratio_peak"] = round(out["studio"]["peak_mb"] / out["reference"]["peak_mb"], 2)
    return out


def quality(evalset: Path, params: Path) -> dict | None:
    if not (evalset / "index.csv").is_file():
        return None
    from productstudio.editing.segmentation_eval import evaluate_cutouts
    from productstudio.models.pretrained import weights_dir
    from productstudio.models.salient import load_segmenter

    settings = _settings(params)
    report = evaluate_cutouts(evalset, load_segmenter(weights_dir("u2netp"), threads=2), settings.cutout,
                              gates=settings.gates)
    return {key: report["summary"][key] for key in ("ours", "plain", "gates") if key in report["summary"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/clothing-dataset-small/test")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--evalset", type=Path, default=REPO / "data/edit/evalset")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/edit.json")
    args = parser.parse_args()
    every = sorted(str(p) for p in args.photos.rglob("*.jpg"))
    step = max(1, len(every) // args.count)
    paths = every[::step][: args.count]  # spread over the categories
    load_before = os.getloadavg()

    studio_rate, studio_rows = throughput(paths, args.workers, args.params, _studio_one)
    reference_rate, _ = throughput(paths, args.workers, args.params, _reference_one)
    stages = stage_times(paths[:10], args.params)
    tmp = REPO / ".scratch" / "bench-edit"
    tmp.mkdir(parents=True, exist_ok=True)
    memory = memory_24mp(Path(paths[0]), args.params, tmp)
    measured = quality(args.evalset, args.params)

    gated = [r for r in studio_rows if not r["refused"]]
    exports_ok = sum(all(r["passed"]) for r in gated)
    print(f"\nStudio export ({PRESET}) of {len(paths)} clothing photos, {args.workers} worker processes x 1 thread")
    print(f"{'method':<44} {'photos/s':>9}")
    print(f"{'studio: cut-out, gates, compose, checks':<44} {studio_rate:>9.2f}")
    print(f"{'reference: plain resize onto white':<44} {reference_rate:>9.2f}")
    print(f"ratio studio/reference {studio_rate / reference_rate:.3f}; target >= 2 photos/s: "
          f"{'met' if studio_rate >= 2 else 'MISSED'}")
    print("one thread, median seconds per photo: " + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))
    print(f"24 MP photo, peak RSS: studio {memory['studio']['peak_mb']} MB, reference {memory['reference']['peak_mb']} MB "
          f"(x{memory['ratio_peak']})")
    print(f"gates passed {len(gated)}/{len(studio_rows)} photos; of those, exports meeting every rule {exports_ok}/{len(gated)}")
    if measured:
        for variant in ("ours", "plain"):
            m = measured[variant]
            print(f"labelled set, {variant:<5}: IoU mean {m['iou_mean']:.4f} min {m['iou_min']:.4f}, MAE {m['mae_mean']:.4f}, "
                  f"boundary F {m['boundary_f_mean']:.4f}, below 0.85: {m['below_floor']}/{m['count']}")
        if "gates" in measured:
            print("gates on the labelled set: " + json.dumps(measured["gates"]))
    result = {
        "benchmark": "edit", "preset": PRESET, "photos": len(paths), "workers": args.workers,
        "studio_photos_per_s": round(studio_rate, 3), "reference_photos_per_s": round(reference_rate, 3),
        "ratio_studio_vs_reference": round(studio_rate / reference_rate, 3), "target_photos_per_s": 2.0,
        "stage_seconds_one_thread": {k: round(v, 4) for k, v in stages.items()},
        "memory_24mp": memory, "gates_passed": len(gated), "exports_meeting_rules": exports_ok,
        "failed_rules": sorted({rule for r in studio_rows for rule in r["checks_failed"]}),
        "quality": measured,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": [round(x, 2) for x in load_before], "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
