"""Benchmark: the learned restorer in int8 ONNX (ONNX Runtime static quantization, QDQ) against fp32.

Issue 11 asks for int8 "if it keeps quality (PSNR drop at most 0.1 dB) and is faster, measured in one run".
This exports the trained restorer (models/restorer) to ONNX, quantizes it with activations calibrated on
damaged validation crops (the training defects, seeded), and measures, in one process:

- quality: mean PSNR against the clean crop on the evaluation table's test crops (256 px, the same seeded
  defects as ``edit restore-eval``) for fp32 torch, fp32 ONNX Runtime and int8 ONNX Runtime, per defect and on
  clean crops; the drop is int8 minus fp32 torch;
- speed: median milliseconds per megapixel on a 512 x 512 input, the three variants timed in interleaved
  rounds (ratios are what to read: this machine's speed drifts).

Prints a table and writes bench/results/restorer_int8.json (with the command, the commit and the load).

    python bench/bench_restorer_int8.py                      # ~3 minutes on 2 cores
    python bench/bench_restorer_int8.py --defects noise25 jpeg10 --crops 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restorer", type=Path, default=REPO / "models" / "restorer")
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "clothing-dataset-small")
    parser.add_argument("--defects", nargs="+", default=["noise15", "noise25", "noise50", "jpeg10", "jpeg20", "jpeg30"])
    parser.add_argument("--crops", type=int, default=60, help="test crops (the table's 60)")
    parser.add_argument("--calibration", type=int, default=24, help="validation crops per defect for calibration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "restorer_int8.json")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from productstudio.config import RestoreEvalSettings
    from productstudio.editing.restoration_eval import damage, load_crops
    from productstudio.models.restorer import load_restorer, psnr
    from productstudio.quantization.measure import time_interleaved, torch_threads

    if not (args.restorer / "restorer.safetensors").is_file():
        print(f"bench_restorer_int8: no trained restorer at {args.restorer} ('dvc repro edit_restorer' first)",
              file=sys.stderr)
        return 2
    model = load_restorer(args.restorer)
    table = RestoreEvalSettings()
    _, test = load_crops(args.photos, ("test",), table.crop, args.crops)
    _, calibration_crops = load_crops(args.photos, ("validation",), table.crop, args.calibration)
    work = Path(tempfile.mkdtemp(prefix="productstudio-restorer-int8-"))
    fp32_path, int8_path = work / "restorer.onnx", work / "restorer-int8.onnx"
    example = torch.rand(1, 3, 64, 64)
    torch.onnx.export(model, example, str(fp32_path), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}}, dynamo=False)
    calibration = [d for defect in args.defects
                   for d in damage(calibration_crops, defect, seed=11, offset=500_000)[0]]
    quantize(fp32_path, int8_path, calibration, work)

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in (("fp32_onnxruntime", fp32_path), ("int8_onnxruntime", int8_path))}

    def to_input(image):
        return (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]

    def to_image(y):
        return np.clip(np.round(y[0].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)

    def run(variant, image):
        if variant == "fp32_torch":
            with torch.inference_mode():
                return to_image(model(torch.from_numpy(to_input(image))).numpy())
        return to_image(sessions[variant].run(None, {"x": to_input(image)})[0])

    variants = ("fp32_torch", "fp32_onnxruntime", "int8_onnxruntime")
    quality = {}
    with torch_threads(args.threads):
        for defect in [*args.defects, "clean"]:
            damaged = test if defect == "clean" else damage(test, defect, table.seed)[0]
            quality[defect] = {v: float(np.mean([psnr(run(v, d), c) for d, c in zip(damaged, test)])) for v in variants}
            quality[defect]["int8_drop_db"] = quality[defect]["fp32_torch"] - quality[defect]["int8_onnxruntime"]
            print(f"{defect:<8} " + "  ".join(f"{v} {quality[defect][v]:.3f}" for v in variants), flush=True)
        big = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
        seconds = time_interleaved({v: (lambda v=v: run(v, big)) for v in variants}, args.rounds)
    ms_per_mp = {v: 1000 * s / (512 * 512 / 1e6) for v, s in seconds.items()}
    worst_drop = max(q["int8_drop_db"] for q in quality.values())
    speedup = ms_per_mp["fp32_torch"] / ms_per_mp["int8_onnxruntime"]
    verdict = {"worst_psnr_drop_db": round(worst_drop, 3), "speedup_vs_fp32_torch": round(speedup, 3),
               "speedup_vs_fp32_onnxruntime": round(ms_per_mp["fp32_onnxruntime"] / ms_per_mp["int8_onnxruntime"], 3),
               "keeps_quality": worst_drop <= 0.1, "faster": speedup > 1.0}
    verdict["ship_int8"] = verdict["keeps_quality"] and verdict["faster"]

    print()
    print(f"learned restorer, int8 vs fp32 ({len(test)} test crops of {table.crop} px; PSNR dB against the clean crop)")
    print(f"{'defect':<8} {'fp32 torch':>11} {'fp32 ORT':>9} {'int8 ORT':>9} {'drop':>7}")
    for defect, q in quality.items():
        print(f"{defect:<8} {q['fp32_torch']:>11.3f} {q['fp32_onnxruntime']:>9.3f} {q['int8_onnxruntime']:>9.3f} "
              f"{q['int8_drop_db']:>7.3f}")
    print(f"ms per megapixel ({args.threads} threads): " + ", ".join(f"{v} {ms:.0f}" for v, ms in ms_per_mp.items()))
    print(f"worst drop {worst_drop:.3f} dB (at most 0.1), int8 {speedup:.2f}x fp32 torch -> "
          f"{'ship int8' if verdict['ship_int8'] else 'keep fp32'}")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    result = {"command": " ".join(["python", *sys.argv]), "commit": commit, "load_average": os.getloadavg(),
              "cores": os.cpu_count(), "threads": args.threads, "crops": len(test), "crop": table.crop,
              "calibration_crops": len(calibration), "quality_psnr_db": quality, "ms_per_megapixel": ms_per_mp,
              "verdict": verdict, "restorer": str(args.restorer)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


def quantize(fp32_path: Path, int8_path: Path, calibration: list[np.ndarray], work: Path) -> None:
    """Static QDQ quantization (per-channel weights, 7-bit as the generator's: this CPU has no VNNI)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": (c.astype(np.float32) / 255).transpose(2, 0, 1)[None]} for c in calibration])

        def get_next(self):
            return next(self.items, None)

    prepared = work / "prepared.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(int8_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


if __name__ == "__main__":
    sys.exit(main())
