"""bench/plot_train_curves.py reads the recorded 60-minute runs as they are committed and draws them."""

import json

import pytest

from bench import plot_train_curves
from tests.conftest import REPO_ROOT

RECORDED = REPO_ROOT / "bench/reported/train-60-s0-decay-2026-12-04.json"


def test_a_recorded_run_reads_back_with_its_curve_chunk_ends_and_final_fid(tmp_path):
    run = plot_train_curves.load_run(RECORDED)
    record = json.loads(RECORDED.read_text())
    assert len(run["minutes"]) == len(record["train_kid"]) - 1  # less the CSV header
    assert run["minutes"] == sorted(run["minutes"]) and run["minutes"][-1] <= 60.1
    assert [m for m, _ in run["chunk_ends"]] == pytest.approx([20, 40, 60], abs=0.05)
    assert run["fid10k"] == pytest.approx(26.19, abs=0.01) and run["steps"] == 9671

    out = tmp_path / "curves.png"
    plot_train_curves.main([str(RECORDED), "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_json_without_a_training_curve_is_refused_in_one_line(tmp_path):
    other = tmp_path / "throughput.json"
    other.write_text(json.dumps({"images_per_s": 250.0}))
    with pytest.raises(SystemExit, match="no train_kid curve"):
        plot_train_curves.load_run(other)
