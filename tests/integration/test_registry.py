"""The MLflow Model Registry for real: register versions, promote or refuse, load the champion back,
against a sqlite store and against a real ``mlflow server`` on 127.0.0.1; retrain --if-changed.

Three tiny generators trained here: ``weak`` (a GAN after 1 step), ``good`` (the CVAE baseline after
30 steps: FID about 100 points lower at this size) and ``worse`` (a GAN after 1 step, another seed). Promotion really measures them (Inception on 30 generated images each, against
the first 30 test images); only the evaluate step's metrics.json / evaluation.json, which register just
copies into tags, are written by hand.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import yaml

from productstudio.cli import main
from productstudio.config import parse_params
from productstudio.data.preprocess import preprocess
from productstudio.data.raw import ingest
from productstudio.training.loop import train
from productstudio.validation.validate import validate

pytestmark = pytest.mark.slow
NAME = "test-generator"
TINY_TRAIN = {"g_width": 8, "d_width": 8, "latent_dim": 16, "batch_size": 16, "threads": 2, "checkpoint_every": 1000,
              "sample_every": 1000, "log_every": 10}


def _params(fashion_dir, **train_overrides) -> dict:
    return {
        "ingest": {"fashion_mnist_dir": str(fashion_dir), "limit_per_category": 10},
        "validate": {"max_leak_fraction": 0.05},
        "train": {**TINY_TRAIN, **train_overrides},
        "evaluate": {"metrics": ["fid30_test", "kid30_test"]}, "protocol": {"kid_subset_size": 10, "kid_subsets": 5, "batch_size": 30},
        "register": {"model_name": NAME},
        # Per-category FIDs from 3 images each are noisy: a loose tolerance; a lax floor for tiny models.
        "promote": {"bootstrap": 10, "z": 2.0, "min_margin": 1.0, "category_tolerance": 0.3, "max_fid": 1000.0},
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, fashion_dir):
    root = tmp_path_factory.mktemp("registry")
    raw = _params(fashion_dir)
    params = parse_params(raw)
    ingest(params.ingest, root / "raw")
    validate(root / "raw", root / "validation", params.validate)
    preprocess(root / "raw", root / "validation", root / "processed", params.preprocess)
    for name, overrides in {"weak": {"max_steps": 1, "ema_decay": 0.0}, "good": {"model": "cvae", "max_steps": 30, "ema_decay": 0.0, "lr_g": 0.002, "lr_d": 0.002},
                            "worse": {"max_steps": 1, "ema_decay": 0.0, "seed": 1}}.items():
        train(parse_params(_params(fashion_dir, **overrides)).train, root / "processed", root / name, root / f"{name}-plots", track=False)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    evaluation = root / "evaluation"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({"fid30_test": 400.0, "kid30_test": 0.3, "kid30_test_std_error": 0.01}))
    record = {"metric": "fid30_test", "value": 400.0, "num_generated": 30, "num_real": 30, "reference_split": "test",
              "latent_seed": 1234, "feature_network": "tf-inception-2015-12-05-pool3"}
    (evaluation / "evaluation.json").write_text(json.dumps({"metrics": [record]}))
    (root / "stats").mkdir()  # an empty real_stats cache: promote fills its private one (work/real)
    return root


def _cli(root, *args) -> int:
    return main([args[0], "--params", str(root / "params.yaml"), *args[1:]])


def _register(root, model, *extra) -> int:
    return _cli(root, "register", "--generator", str(root / model / "generator"), "--evaluation", str(root / "evaluation"),
                "--processed", str(root / "processed"), *extra)


def _promote(root, out) -> int:
    return _cli(root, "promote", "--processed", str(root / "processed"), "--cache", str(root / "stats"), "--out", str(out),
                "--work", str(root / "work"), "--device", "cpu")


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def test_register_promote_refuse_and_load_the_champion(tiny, tmp_path, monkeypatch, capsys):
    import mlflow
    import pandas as pd

    from productstudio.registry.model_registry import load_registered

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "promote"

    # v1: the first model becomes champion when it clears the floor.
    assert _register(tiny, "weak", "--out", str(tmp_path / "reg")) == 0
    assert "registered test-generator version 1 (fp32) with alias 'challenger'" in capsys.readouterr().out
    assert json.loads((tmp_path / "reg/registered.json").read_text())["version"] == "1"
    assert _register(tiny, "weak") == 0  # same weights, data, params, commit: not again
    assert "version 1 already holds these weights" in capsys.readouterr().out
    assert _promote(tiny, out) == 0
    assert "promoted as the first champion: fid30_test" in capsys.readouterr().out
    client = _client()
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"

    # v2: a better model is promoted.
    assert _register(tiny, "good") == 0
    assert _promote(tiny, out) == 0
    printed = capsys.readouterr().out
    assert "test-generator version 2: promoted: fid30_test" in printed, printed
    decision = json.loads((out / "decision.json").read_text())
    assert decision["promoted"] and decision["champion_before"] == "1" and decision["champion_after"] == "2"
    assert decision["challenger_report"]["fid"] < decision["champion_report"]["fid"] - decision["decision"]["rules"][1]["evidence"]["required"]
    assert decision["challenger_report"]["protocol"] == decision["champion_report"]["protocol"]
    assert decision["challenger_report"]["protocol"]["num_generated"] == 30

    # v3: a worse model is refused, with its reason on the version and in the run.
    assert _register(tiny, "worse") == 0
    assert _promote(tiny, out) == 0
    printed = capsys.readouterr().out
    assert "test-generator version 3: refused by fid_margin: fid30_test" in printed, printed
    assert "champion: version 2 (kept)" in printed
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "3"
    tags = client.get_model_version(NAME, "3").tags
    assert tags["promotion.decision"] == "refused" and tags["promotion.reason"].startswith("refused by fid_margin")
    assert tags["data.version"] and tags["params.hash"] and tags["git.commit"] and tags["metrics.fid30_test"] == "400.0"
    assert json.loads(tags["metrics.protocol"])["fid30_test"]["num_real"] == 30
    logged = mlflow.artifacts.load_dict(f"runs:/{client.get_model_version(NAME, '3').run_id}/promotion/decision.json")
    assert logged["promoted"] is False and logged["reason"] == tags["promotion.reason"]
    assert _cli(tiny, "promote", "--processed", str(tiny / "processed"), "--cache", str(tiny / "stats"), "--out", str(out),
                "--work", str(tiny / "work"), "--strict") == 1  # the CI gate form

    # v4: the champion's weights plus an int8 variant that cannot be evaluated: refused on both counts.
    # Named like the pipeline's models/quantized: MLflow keeps the folder name, not the artifact key.
    junk = tmp_path / "quantized"
    junk.mkdir()
    (junk / "model.bin").write_bytes(b"not a model")
    assert _register(tiny, "good", "--int8", str(junk)) == 0
    assert "version 4 (fp32,int8)" in capsys.readouterr().out
    assert _promote(tiny, out) == 0
    assert "(also failed: int8)" in capsys.readouterr().out

    # The champion loads with the library's loader, and as an MLflow pyfunc.
    generator, info = load_registered(f"models:/{NAME}@champion")
    assert info["version"] == "2" and "champion" in info["aliases"] and info["categories"][0] == "T-shirt/top"
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    images = pyfunc.predict(pd.DataFrame({"category": [0, 7, 7], "seed": [5, 6, 6]}))
    assert images.shape == (3, 1, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[1], images[2])  # same (category, seed), same image
    assert pyfunc.metadata.get_input_schema().input_names() == ["category", "seed"]
    with pytest.raises(ValueError, match=r"^models:/test-generator@nope: no version has the alias 'nope' of 'test-generator'$"):
        load_registered(f"models:/{NAME}@nope")
    with pytest.raises(ValueError, match="expected models:/<name>@<alias>"):
        load_registered("runs:/abc/generator")


def test_retrain_if_changed(tiny, tmp_path, monkeypatch, capsys):
    from productstudio.registry.retrain import retrain_if_changed

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text((tiny / "params.yaml").read_text())
    never = lambda: pytest.fail("the pipeline ran although nothing changed")  # noqa: E731

    calls = []
    first = retrain_if_changed(params, tiny / "processed", repro=lambda: calls.append("repro"),
                               after=lambda: calls.append("after") or {})
    assert first.ran and first.message == "retrained: no registered version of 'test-generator' yet" and calls == ["repro", "after"]
    assert main(["register", "--params", str(params), "--generator", str(tiny / "weak/generator"),
                 "--evaluation", str(tiny / "evaluation"), "--processed", str(tiny / "processed")]) == 0

    # Nothing changed: a quick exit that never imports torch.
    code = ("import sys; from productstudio.cli import main; code = main(['retrain', '--if-changed', '--params', sys.argv[1], "
            "'--processed', sys.argv[2]]); print('torch' in sys.modules); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, str(params), str(tiny / "processed")], capture_output=True, text=True,
                            env={**os.environ}, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("nothing changed since version 1 (data ") and lines[-1] == "False"
    assert retrain_if_changed(params, tiny / "processed", repro=never).ran is False

    # A changed train param: the pipeline runs, then register + promote.
    raw = yaml.safe_load(params.read_text())
    raw["train"]["max_steps"] = 2
    params.write_text(yaml.safe_dump(raw))
    calls.clear()
    changed = retrain_if_changed(params, tiny / "processed", repro=lambda: calls.append("repro"), after=lambda: calls.append("after") or {})
    assert changed.ran and changed.message.startswith("retrained: params changed since version 1 (") and calls == ["repro", "after"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)  # gunicorn drains for up to 30 s; nothing to drain here
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_register_and_promote_against_an_mlflow_server(tiny, tmp_path, monkeypatch, capsys, mlflow_server):
    from productstudio.registry.model_registry import load_registered

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    assert _register(tiny, "good") == 0
    assert "registered test-generator version 1" in capsys.readouterr().out
    assert _promote(tiny, tmp_path / "promote") == 0
    assert "promoted as the first champion" in capsys.readouterr().out
    generator, info = load_registered(f"models:/{NAME}@champion")
    assert info["version"] == "1" and info["tags"]["promotion.decision"] == "promoted"
    import torch

    with torch.inference_mode():
        images = generator(torch.randn(2, generator.config.latent_dim), torch.tensor([1, 8]))
    assert images.shape == (2, 1, 28, 28)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists(), "everything went to the server"
    assert any((tmp_path / "artifacts").rglob("generator.safetensors")), "artifacts proxied by the server"


def test_promote_measures_nothing_that_quantize_already_measured(tiny, tmp_path, monkeypatch):
    """The challenger's fp32 and int8 features (and the real ones) come from quantize's run: promote runs
    Inception on nothing. And they are the images promote would make itself: the same int8 features
    from an empty cache."""
    from productstudio.metrics import features as feats
    from productstudio.metrics.generated_features import GeneratedFeatures
    from productstudio.models.onnx_generator import INT8_FILE, load_quantized
    from productstudio.models.sampling import generated_batches
    from productstudio.artifacts import sha256_file
    from productstudio.promotion.champion import promote_challenger
    from productstudio.quantization.quantize import quantize

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    params = parse_params(yaml.safe_load((tiny / "params.yaml").read_text()))
    features = tmp_path / "features"
    settings = params.quantize.model_copy(update={"metrics": ["fid30_test"], "psnr_samples": 30, "calibration_samples": 32,
                                                  "timing_rounds": 1})
    quantize(tiny / "weak/generator", tmp_path / "quantized", settings, processed_dir=tiny / "processed",
             cache_dir=tiny / "stats", seed=params.protocol.seed, batch_size=params.protocol.batch_size, features_dir=features)
    assert _register(tiny, "weak", "--int8", str(tmp_path / "quantized")) == 0

    before = feats.counters["images"]
    result = promote_challenger(params, tiny / "processed", tiny / "stats", tmp_path / "promote", features_dir=features,
                                device="cpu")
    assert feats.counters["images"] == before
    assert "fid" in result["challenger_report"]["int8"], result["challenger_report"]["int8"]

    int8 = load_quantized(tmp_path / "quantized")
    fresh = GeneratedFeatures(tmp_path / "fresh", batch_size=params.protocol.batch_size, progress=False)
    key = fresh.key(sha256_file(tmp_path / "quantized" / INT8_FILE), params.protocol.seed)
    ours = fresh.features(key, 30, lambda n: generated_batches(int8, n, params.protocol.seed, fresh.batch_size, "cpu"))
    np.testing.assert_array_equal(ours, np.load(GeneratedFeatures(features).file(key, 30)))
