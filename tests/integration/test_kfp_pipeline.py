"""The KFP door: the committed pipeline package is fresh and loadable, and the pipeline really runs.

The slow tests run the whole pipeline (ingest -> validate -> preprocess -> classifier, real-stats ->
train, train-baseline -> evaluate, evaluate-baseline, quantize -> register, promote) with kfp.local's SubprocessRunner (every task a subprocess of this interpreter)
on 20 Fashion-MNIST items per category and split, with tiny train and evaluate settings, and check the
artifacts the library wrote.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kfp.components import load_component_from_file

from productstudio.steps import table

REPO_ROOT = Path(__file__).resolve().parents[2]
FASHION_DIR = REPO_ROOT.parent / "shared" / "data" / "fashion-mnist"
COMMITTED_YAML = REPO_ROOT / "pipelines" / "product_studio.yaml"
CATEGORIES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
LIMIT = 20
# Tiny settings so the whole run stays around two minutes on two busy cores.
TINY_TRAIN = {
    "max_steps": 20, "g_width": 8, "d_width": 8, "latent_dim": 16, "batch_size": 16,
    "log_every": 5, "checkpoint_every": 10, "sample_every": 10, "kid_every": 10, "kid_samples": 10,
}
TINY_BASELINE = {"model": "cvae", "max_steps": 10}
TINY_EVALUATE = {
    "metrics": ["fid20_test", "kid20_test"], "per_category": False, "classifier_epochs": 1,
}
TINY_PROTOCOL = {"kid_subset_size": 10, "kid_subsets": 5}
TINY_QUANTIZE = {"metrics": ["fid20_test"], "psnr_samples": 20, "calibration_samples": 64, "timing_rounds": 2}
# Every pipeline step of the table is a task; KFP names a component's second task "<name>-2": the baseline's.
TASKS = {step.name for step in table.PIPELINE} | {"train-2", "evaluate-2"}


def test_committed_yaml_is_fresh(tmp_path):
    """pipelines/product_studio.yaml is exactly what the code compiles to (and compiling is deterministic)."""
    env = {k: v for k, v in os.environ.items() if k != "PRODUCTSTUDIO_IMAGE"}  # the committed one uses the default image
    fresh = []
    for name in ("first.yaml", "second.yaml"):
        out = tmp_path / name
        subprocess.run(
            [sys.executable, "-m", "pipelines.product_studio", "compile", "--output", str(out)],
            cwd=REPO_ROOT, env=env, check=True, capture_output=True, text=True,
        )
        fresh.append(out.read_bytes())
    assert fresh[0] == fresh[1], "compiling twice gave different bytes: the package is not deterministic"
    assert COMMITTED_YAML.is_file(), f"{COMMITTED_YAML} is missing: run `make pipeline-yaml`"
    assert COMMITTED_YAML.read_bytes() == fresh[0], (
        f"{COMMITTED_YAML.relative_to(REPO_ROOT)} is stale (components or pipeline changed): "
        "run `make pipeline-yaml` and commit the result"
    )


def test_committed_yaml_loads_back():
    """The package parses against the pipeline-spec proto and has the interface and images we expect."""
    from components import DEFAULT_IMAGE

    pipeline = load_component_from_file(str(COMMITTED_YAML))
    assert pipeline.name == "product-studio"
    spec = pipeline.component_spec
    assert set(spec.inputs) == {"params_yaml", "quarantine", "mlflow_tracking_uri"}
    assert spec.inputs["params_yaml"].default == ""
    assert spec.inputs["quarantine"].default is False
    assert spec.inputs["mlflow_tracking_uri"].default == "", "MLflow must be off unless asked for"
    assert set(spec.outputs) == {"dataset", "validation", "model", "evaluation", "quantized", "baseline_evaluation"}

    document = yaml.safe_load(COMMITTED_YAML.read_text())
    tasks = document["root"]["dag"]["tasks"]
    assert set(tasks) == TASKS
    assert "dependentTasks" not in tasks["ingest"]
    assert tasks["validate"]["dependentTasks"] == ["ingest"]
    assert sorted(tasks["preprocess"]["dependentTasks"]) == ["ingest", "validate"]
    # classifier and real-stats hang off preprocess only (so they can run in parallel) ...
    for name in ("train-classifier", "real-stats"):
        assert tasks[name]["dependentTasks"] == ["preprocess"], name
    # ... both trainings also wait for real-stats (KID during training), and evaluate for all three.
    for train_task, evaluate_task, name in (("train", "evaluate", "train"), ("train-2", "evaluate-2", "train-baseline")):
        assert tasks[train_task]["taskInfo"]["name"] == name
        assert sorted(tasks[train_task]["dependentTasks"]) == ["preprocess", "real-stats"], train_task
        assert sorted(tasks[evaluate_task]["dependentTasks"]) == ["preprocess", "real-stats", train_task, "train-classifier"]
        evaluate_inputs = tasks[evaluate_task]["inputs"]["artifacts"]
        assert {k: v["taskOutputArtifact"]["producerTask"] for k, v in evaluate_inputs.items()} == {
            "model": train_task, "dataset": "preprocess", "classifier": "train-classifier", "stats": "real-stats",
        }
    assert tasks["train-2"]["inputs"]["parameters"]["baseline"]["runtimeValue"]["constant"] is True
    assert "baseline" not in tasks["train"]["inputs"]["parameters"]  # the component's default: the GAN
    # register after evaluate (and train), promote after register, on the same cached real features.
    assert sorted(tasks["register"]["dependentTasks"]) == ["evaluate", "preprocess", "quantize", "train"]
    assert sorted(tasks["promote"]["dependentTasks"]) == ["preprocess", "real-stats", "register"]
    outputs = document["root"]["dag"]["outputs"]["artifacts"]
    assert {k: v["artifactSelectors"][0]["producerSubtask"] for k, v in outputs.items()} == {
        "dataset": "preprocess", "validation": "validate", "model": "train", "evaluation": "evaluate",
        "quantized": "quantize", "baseline_evaluation": "evaluate-2",
    }
    # quantize needs the trained generator and the cached real features only.
    assert sorted(tasks["quantize"]["dependentTasks"]) == ["preprocess", "real-stats", "train"]
    components = document["components"]
    assert components["comp-train"]["outputDefinitions"]["artifacts"]["model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert components["comp-evaluate"]["outputDefinitions"]["artifacts"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    executors = document["deploymentSpec"]["executors"]
    assert set(executors) == {f"exec-{name}" for name in TASKS}
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == DEFAULT_IMAGE, name
        command = " ".join(container["command"])
        assert "pip install" not in command, f"{name} installs packages at run time (install_kfp_package=False?)"


def test_run_local_rejects_bad_params_before_any_task(tmp_path):
    from productstudio.config import ParamsError

    from pipelines.product_studio import run_local

    params = tmp_path / "params.yaml"
    params.write_text("preprocess:\n  image_size: -3\n")
    with pytest.raises(ParamsError, match=r"preprocess\.image_size = -3"):
        run_local(params, tmp_path / "run")
    assert not (tmp_path / "run" / "outputs").exists()


def _params(tmp_path: Path, **validate) -> Path:
    if not FASHION_DIR.is_dir():
        pytest.fail(f"{FASHION_DIR} is missing: this test reads Fashion-MNIST from ../shared/data")
    params = {
        "ingest": {"source": "fashion-mnist", "fashion_mnist_dir": str(FASHION_DIR), "limit_per_category": LIMIT},
        # The first 20 items per category hold one near-duplicate pair across train and test (2 of 400).
        "validate": {"max_leak_fraction": 0.01, **validate},
        "preprocess": {"image_size": 28, "mode": "L", "seed": 0},
        "train": TINY_TRAIN,
        "baseline": TINY_BASELINE,
        "evaluate": TINY_EVALUATE,
        "protocol": TINY_PROTOCOL,
        "quantize": TINY_QUANTIZE,
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.mark.slow
@pytest.mark.timeout(600)  # about 2 minutes on two idle cores; Inception and FID on the CPU dominate
def test_pipeline_runs_locally_end_to_end(tmp_path, monkeypatch):
    from pipelines.product_studio import run_local

    monkeypatch.chdir(tmp_path)  # anything a task writes relative to its working directory lands here
    root = tmp_path / "run"
    outputs = run_local(_params(tmp_path), root)

    assert set(outputs) == {"dataset", "validation", "model", "evaluation", "quantized", "baseline_evaluation"}
    for path in outputs.values():
        assert Path(path).is_relative_to(root / "outputs"), "artifacts must land under the pipeline root"

    report = json.loads((Path(outputs["validation"]) / "report.json").read_text())
    assert report["success"] is True
    assert report["source"] == "fashion-mnist"
    assert report["counts"]["files"] == 2 * LIMIT * len(CATEGORIES)  # train + test
    assert report["counts"]["quarantined"] == 0
    assert all(outcome["success"] for outcome in report["expectations"])

    dataset = Path(outputs["dataset"])
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["kind"] == "processed-dataset"
    assert manifest["categories"] == CATEGORIES
    assert manifest["image_shape"] == [1, 28, 28]
    splits = manifest["splits"]
    assert set(splits) == {"train", "val", "test"}
    for name, split in splits.items():
        assert set(split["per_category"]) == set(CATEGORIES), name
        assert split["count"] == sum(split["per_category"].values()), name
    # No exact duplicates among these 400 images: every one is kept, the test split as the source has it,
    # and train + val (however the library carves val) are the 20 train images of each category.
    assert manifest["counts"] == {"input": 400, "usable": 400, "duplicates_removed": 0, "kept": 400}
    assert splits["test"]["per_category"] == {name: LIMIT for name in CATEGORIES}
    for name in CATEGORIES:
        assert splits["train"]["per_category"][name] + splits["val"]["per_category"][name] == LIMIT, name
    from productstudio.data.store import load_split

    images, labels = load_split(dataset, "test")
    assert images.shape == (LIMIT * len(CATEGORIES), 1, 28, 28) and images.dtype.name == "uint8"
    assert sorted(set(labels.tolist())) == list(range(len(CATEGORIES)))

    # The ingest output the other two consumed, and every task's temp folder under the run's root.
    (raw_manifest_path,) = (root / "outputs").glob("*/ingest/raw/manifest.json")
    raw_manifest = json.loads(raw_manifest_path.read_text())
    assert raw_manifest["kind"] == "raw-dataset" and raw_manifest["params"]["limit_per_category"] == LIMIT
    assert len(list((root / "tmp").iterdir())) >= 3, "TMPDIR was not pointed at <root>/tmp for the tasks"

    # train: the generator evaluation (and serving) loads, the loss curve, no MLflow unless asked for.
    model = Path(outputs["model"])
    assert (model / "generator" / "generator.safetensors").is_file()
    trained = json.loads((model / "manifest.json").read_text())
    assert trained["kind"] == "trained-generator"
    assert trained["summary"]["steps"] == TINY_TRAIN["max_steps"] and trained["summary"]["stopped_by"] == "max_steps"
    assert trained["params"]["g_width"] == TINY_TRAIN["g_width"], "the train task ignored params_yaml"
    assert trained["mlflow_run_id"] is None
    (loss_csv,) = (root / "outputs").glob("*/train/loss/train_loss.csv")
    rows = loss_csv.read_text().splitlines()
    assert rows[0].startswith("step,loss_d,loss_g")
    assert len(rows) == 1 + TINY_TRAIN["max_steps"] // TINY_TRAIN["log_every"]
    # KID of EMA samples against the real-stats task's features, every kid_every steps.
    kid_rows = [row.split(",") for row in (loss_csv.parent / "train_kid.csv").read_text().splitlines()]
    assert kid_rows[0][:3] == ["step", "train_minutes", "kid"]
    assert [int(row[0]) for row in kid_rows[1:]] == [10, 20]
    assert all(math.isfinite(float(row[2])) for row in kid_rows[1:])
    assert not list(tmp_path.glob("mlflow.db")) and not (tmp_path / "mlruns").exists()

    # train-classifier and real-stats, which evaluate consumed.
    (classifier_manifest,) = (root / "outputs").glob("*/train-classifier/classifier/manifest.json")
    classifier = json.loads(classifier_manifest.read_text())
    assert classifier["params"]["epochs"] == TINY_EVALUATE["classifier_epochs"]
    assert isinstance(classifier["test_accuracy"], float) and 0.0 <= classifier["test_accuracy"] <= 1.0
    (floor_path,) = (root / "outputs").glob("*/real-stats/stats/floor.json")
    assert json.loads(floor_path.read_text())["counts"] == {"test": 20, "train": 20}

    # evaluate: the flat metrics (DVC's metrics.json) and the full report.
    evaluation = Path(outputs["evaluation"])
    metrics = json.loads((evaluation / "metrics.json").read_text())
    for name in ("fid20_test", "kid20_test"):
        assert isinstance(metrics[name], float) and math.isfinite(metrics[name]), name
    assert metrics["fid20_test"] >= 0
    for name in ("classifier_accuracy_generated", "classifier_accuracy_real_test"):
        assert isinstance(metrics[name], float) and 0.0 <= metrics[name] <= 1.0, name
    assert metrics["classifier_accuracy_real_test"] == pytest.approx(classifier["test_accuracy"])
    report = json.loads((evaluation / "evaluation.json").read_text())
    assert [r["metric"] for r in report["metrics"]] == TINY_EVALUATE["metrics"]
    assert all(r["num_generated"] == 20 for r in report["metrics"])
    assert report["per_category"] == {} and report["mlflow_run_id"] is None
    assert report["data_version"] == trained["inputs"]["processed_data_version"]
    # The evaluate task's Metrics output (what the KFP UI shows) repeats the flat numbers.
    (executor_output,) = (root / "outputs").glob("*/evaluate/executor_output.json")
    logged = json.loads(executor_output.read_text())["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert logged == pytest.approx(metrics)

    # train-baseline and evaluate-baseline: the CVAE, judged on the same protocol, with its reconstructions.
    (baseline_manifest,) = (root / "outputs").glob("*/train-2/model/manifest.json")
    baseline = json.loads(baseline_manifest.read_text())
    assert baseline["params"]["model"] == "cvae" and baseline["summary"]["steps"] == TINY_BASELINE["max_steps"]
    assert baseline["params"]["g_width"] == TINY_TRAIN["g_width"], "the baseline is 'train' overlaid with 'baseline'"
    baseline_metrics = json.loads((Path(outputs["baseline_evaluation"]) / "metrics.json").read_text())
    assert set(metrics) <= set(baseline_metrics)
    assert 0 < baseline_metrics["psnr_test_recon"] < 60 and 0 < baseline_metrics["ssim_test_recon"] <= 1

    # quantize: the int8 model loads with the library's loader and its report sits beside it.
    from productstudio.quantization.quantize import load_quantized

    quantized = Path(outputs["quantized"])
    int8 = load_quantized(quantized)
    assert int8.config.latent_dim == TINY_TRAIN["latent_dim"]
    q_report = json.loads((quantized / "quantization.json").read_text())
    assert [r["metric"] for r in q_report["quality"]["metrics"]] == TINY_QUANTIZE["metrics"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_failing_validation_stops_the_pipeline(tmp_path):
    """A suite failure fails the validate task, so the run, and preprocess never starts."""
    from pipelines.product_studio import run_local

    root = tmp_path / "run"
    params = _params(tmp_path, min_per_category=1000)  # 40 items per category here
    with pytest.raises(RuntimeError, match="validate"):
        run_local(params, root)

    (run_dir,) = (root / "outputs").iterdir()
    report = json.loads((run_dir / "validate" / "validation" / "report.json").read_text())
    assert report["success"] is False
    failed = [outcome["name"] for outcome in report["expectations"] if not outcome["success"]]
    assert failed == ["files per category within bounds"]
    assert not (run_dir / "preprocess").exists()
