"""``productstudio quantize`` end to end on a tiny generator and a small real dataset: pruning, int8,
FID/KID of fp32 and int8 on the same seeds (real features not cached: the real_stats output is never
written), the DVC metrics file, and the one-line error for a missing generator."""

import json
import math
import subprocess
import sys

import pytest
import yaml

from productstudio.config import parse_params
from productstudio.data.preprocess import preprocess
from productstudio.data.raw import ingest
from productstudio.models.io import save_generator
from productstudio.validation.validate import validate
from tests.unit.test_quantization import tiny_generator

QUANTIZE = {"metrics": ["fid10_test", "kid10_test"], "psnr_samples": 20, "calibration_samples": 64, "timing_rounds": 2,
            "prune": "l1_unstructured", "prune_amount": 0.2}


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "productstudio.cli", "quantize", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def project(tmp_path_factory, fashion_dir):
    root = tmp_path_factory.mktemp("quantize-cli")
    raw = {"ingest": {"fashion_mnist_dir": str(fashion_dir), "limit_per_category": 2, "categories": None},
           "validate": {"max_leak_fraction": 0.2}, "quantize": QUANTIZE, "protocol": {"kid_subset_size": 5, "kid_subsets": 3}}
    params = parse_params(raw)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    ingest(params.ingest, root / "raw")
    validate(root / "raw", root / "validation", params.validate)
    preprocess(root / "raw", root / "validation", root / "processed", params.preprocess)
    save_generator(tiny_generator(num_classes=10), root / "generator", categories=[f"c{i}" for i in range(10)], kind="gan")
    return root


def test_cli_quantizes_and_measures_fid_kid_on_the_same_seeds(project):
    root = project
    (root / "stats").mkdir()
    result = _cli("--params", root / "params.yaml", "--generator", root / "generator", "--processed", root / "processed",
                  "--cache", root / "stats", "--out", root / "int8", "--metrics", root / "reports" / "metrics.json")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "exporting to ONNX" in out and "quantizing to int8" in out  # progress
    assert "int8 ONNX Runtime" in out and "speed-up at batch 64" in out and "fid10_test: fp32" in out
    assert "pruning l1_unstructured" in out

    report = json.loads((root / "int8" / "quantization.json").read_text())
    fid, kid = report["quality"]["metrics"]
    assert (fid["metric"], kid["metric"]) == ("fid10_test", "kid10_test")
    for record in (fid, kid):
        assert record["num_generated"] == 10 and record["num_real"] == 10 and record["reference_split"] == "test"
        assert record["latent_seed"] == 1234 and record["feature_network_sha256"]
        assert math.isfinite(record["fp32"]) and math.isfinite(record["int8"])
        assert record["relative_change"] == pytest.approx((record["int8"] - record["fp32"]) / abs(record["fp32"]))
    assert fid["fp32"] > 0 and fid["int8"] > 0
    assert report["quality"]["fid_fp32_vs_int8"] >= 0
    assert 0.15 < report["pruning"]["zero_fraction"] < 0.25
    assert report["target"]["fid_metric"] == "fid10_test" and report["target"]["fid_met"] is not None

    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["fid10_test_fp32"] == pytest.approx(fid["fp32"]) and metrics["fid10_test_int8"] == pytest.approx(fid["int8"])
    assert metrics["speedup_b64_int8_vs_fp32_eager"] > 0 and metrics["psnr_db_fp32_vs_int8"] > 15
    # The real features were extracted but not cached: the cache directory belongs to the real_stats stage.
    assert list((root / "stats").iterdir()) == []


def test_cli_missing_generator_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("quantize: {}\n")
    result = _cli("--params", tmp_path / "params.yaml", "--generator", tmp_path / "nope", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"productstudio quantize: error: {tmp_path / 'nope'}: no generator.safetensors; not a saved generator"
    ]
    assert not (tmp_path / "out").exists()
