"""Kubeflow Trainer TrainJob: the committed example is the renderer's output, valid against the CRD's schema; each
rule the schema lacks refuses a bad value; the pod script and the KFP hand-off work against local stand-ins."""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from productstudio.config import Params, load_params, parse_params, section_dict
from productstudio.deploy import trainjob
from productstudio.deploy.trainjob import EXAMPLE_DATA_MD5, TrainJobError
from productstudio.errors import MissingInput, ParamsError, ServiceError
from tests.conftest import REPO_ROOT

SCHEMAS = REPO_ROOT.parent / "shared" / "schemas" / "kubeflow-trainer"
CRD = SCHEMAS / "trainer.kubeflow.org_trainjobs.yaml"
RUNTIMES = SCHEMAS / "torch_distributed.yaml"
EXAMPLE = REPO_ROOT / "deploy" / "kubeflow-trainer" / "trainjob.yaml"


@pytest.fixture(scope="module")
def schemas():
    for path in (CRD, RUNTIMES):
        if not path.is_file():  # CI has ../shared beside the repository: absence is a broken checkout, not a skip
            pytest.fail(f"{path} is missing: the TrainJob tests validate against ../shared/schemas/kubeflow-trainer")
    return CRD, RUNTIMES


@pytest.fixture(scope="module")
def params():
    return load_params(REPO_ROOT / "params.yaml")


def render(params, settings=None, md5=EXAMPLE_DATA_MD5, **kwargs):
    return trainjob.render_trainjob(settings or params.trainjob, section_dict(params.train), md5, **kwargs)


def problems(manifest, schemas):
    return trainjob.trainjob_problems(manifest, *schemas)


def test_committed_example_is_what_the_renderer_writes(schemas, params, tmp_path):
    # deploy/kubeflow-trainer/trainjob.yaml is 'productstudio deploy trainjob --example' on the default params.
    assert params == Params()
    written = trainjob.write_trainjob(tmp_path / "trainjob.yaml", render(params), *schemas, flags=" --example")
    assert EXAMPLE.read_text() == written.read_text(), f"{EXAMPLE} is stale: run 'productstudio deploy trainjob --example'"
    assert problems(yaml.safe_load(EXAMPLE.read_text()), schemas) == []


def test_rendered_trainjob_is_valid_against_the_crd(schemas, params):
    gpu = params.trainjob.model_copy(update={"proc_per_node": 2, "resources_per_node": params.trainjob.resources_per_node.model_copy(
        update={"gpu": 2})})
    extra = params.trainjob.model_copy(update={"env": {"OMP_NUM_THREADS": "4"}, "s3_endpoint_url": "http://minio.minio:9000",
                                               "secret_keys": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                               "MLFLOW_TRACKING_PASSWORD"]})
    for manifest in (render(params), render(params, gpu), render(params, extra), render(params, mlflow_tracking_uri=""),
                     render(params, name=trainjob.unique_name("x" * 70))):
        assert problems(manifest, schemas) == []
    # The schema itself, with jsonschema, accepts it too (the same check as the KServe manifests).
    import jsonschema

    jsonschema.validate(render(params), trainjob.load_schema(CRD))


def test_trainjob_runs_productstudio_train_under_torchrun_with_pinned_data(params):
    manifest = render(params)
    assert (manifest["apiVersion"], manifest["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    spec = manifest["spec"]
    assert spec["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                  "name": "torch-distributed"}
    trainer = spec["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (params.trainjob.num_nodes, params.trainjob.proc_per_node)
    assert trainer["resourcesPerNode"]["requests"] == trainer["resourcesPerNode"]["limits"] == {"cpu": "4", "memory": "8Gi"}
    script = trainer["command"][2]
    assert trainer["command"][:2] == ["bash", "-c"] and "$(" not in script  # Kubernetes would expand $(NAME)
    assert "torchrun --module productstudio.cli train --params params.yaml --processed processed" in script
    assert "dvc pull" in script and "--no-mlflow" not in script
    assert "--no-mlflow" in render(params, mlflow_tracking_uri="")["spec"]["trainer"]["command"][2]
    env = {item["name"]: item for item in trainer["env"]}
    assert yaml.safe_load(env["PRODUCTSTUDIO_PARAMS_YAML"]["value"]) == {"train": section_dict(params.train)}
    assert env["PRODUCTSTUDIO_DATA_MD5"]["value"] == EXAMPLE_DATA_MD5
    assert env["PRODUCTSTUDIO_OUTPUT_URI"]["value"] == "s3://product-studio-models/trainjobs/product-studio-train"
    assert env["MLFLOW_TRACKING_URI"]["value"] == params.trainjob.mlflow_tracking_uri
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # from the Secret, never literal
        assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": "product-studio-s3", "key": key}}}
    gpu = params.trainjob.model_copy(update={"resources_per_node": params.trainjob.resources_per_node.model_copy(update={"gpu": 1})})
    assert render(params, gpu)["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 1


def _set(manifest, path, value):
    *parents, last = path
    node = manifest
    for key in parents:
        node = node[key]
    node[last] = value


T = ("spec", "trainer")
R = (*T, "resourcesPerNode")


def _env(*items):
    return (*T, "env"), [{"name": "PRODUCTSTUDIO_DATA_MD5", "value": EXAMPLE_DATA_MD5}, *items]


@pytest.mark.parametrize("path, value, expected", [
    # metadata.name: the CRD's CEL rule (RFC 1035 label, at most 63), which jsonschema does not run
    (("metadata", "name"), "Product_Train", "metadata.name = 'Product_Train': must be a DNS-1035 label"),
    (("metadata", "name"), "1-train", "metadata.name = '1-train': must be a DNS-1035 label"),
    (("metadata", "name"), "t" * 64, "must be a DNS-1035 label (lowercase letters, digits, '-', starting with a letter) of at most 63"),
    (("metadata", "namespace"), "Product Studio", "metadata.namespace = 'Product Studio': must be a DNS-1123 label"),
    (("metadata", "uid"), "x", "metadata.uid: unknown or not settable field"),
    # numNodes: the schema allows 0
    ((*T, "numNodes"), 0, "spec.trainer.numNodes = 0: at least 1 node"),
    # numProcPerNode against the GPUs (or CPUs) each node gets
    ((*R, "limits"), {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": 1}, None),  # (valid: 1 process, 1 GPU)
    ((*T, "numProcPerNode"), 8, "spec.trainer.numProcPerNode = 8: more processes than the 4 CPU(s) per node"),
    ((*T, "numProcPerNode"), "auto", "spec.trainer.numProcPerNode: 'auto' is not of type 'integer'"),
    # resource quantities
    ((*R, "limits", "memory"), "8 gigs", "spec.trainer.resourcesPerNode.limits.memory: '8 gigs' does not match"),
    ((*R, "requests", "cpu"), "8", "requests.cpu = '8': more than its limit '4'"),
    ((*R, "requests", "memory"), "-1Gi", "requests.memory = '-1Gi': must not be negative"),
    ((*R, "limits", "nvidia.com/gpu"), "500m", "limits.nvidia.com/gpu = 0.500: GPUs come whole"),
    # the image: pinned, not :latest
    ((*T, "image"), "ghcr.io/productstudio/productstudio", "pin it with a tag or an @sha256 digest"),
    ((*T, "image"), "localhost:5000/productstudio", "pin it with a tag or an @sha256 digest"),
    ((*T, "image"), "ghcr.io/productstudio/productstudio:latest", "':latest' moves"),
    ((*T, "image"), "ghcr.io/productstudio/productstudio@sha256:" + "a" * 64, None),
    ((*T, "image"), "", "spec.trainer.image: missing"),
    # env: names, reserved names, no literal secrets
    (*_env({"name": "1BAD", "value": "x"}), "'1BAD' is not a valid variable name"),
    (*_env({"name": "PET_NNODES", "value": "4"}), "spec.trainer.env.PET_NNODES: reserved"),
    (*_env({"name": "WORLD_SIZE", "value": "4"}), "spec.trainer.env.WORLD_SIZE: reserved"),
    (*_env({"name": "AWS_SECRET_ACCESS_KEY", "value": "hunter2"}), "AWS_SECRET_ACCESS_KEY: looks like a credential"),
    (*_env({"name": "MLFLOW_TRACKING_PASSWORD", "value": "hunter2"}), "MLFLOW_TRACKING_PASSWORD: looks like a credential"),
    (*_env({"name": "MLFLOW_TRACKING_URI", "value": "https://me:hunter2@mlflow.example"}), "a URL with a password"),
    (*_env({"name": "PRODUCTSTUDIO_DATA_MD5", "value": "x"}), "spec.trainer.env.PRODUCTSTUDIO_DATA_MD5: set twice"),
    ((*T, "env", 2, "value"), "f05773f6", "PRODUCTSTUDIO_DATA_MD5 = 'f05773f6': not a DVC directory hash"),
    (*_env({"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "", "key": "t"}}}), "secretKeyRef.name: missing"),
    (*_env({"name": "X", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}), "has both value and valueFrom"),
    # the runtime: one that exists in the shipped torch_distributed.yaml
    ((*T[:1], "runtimeRef", "name"), "torch-distributed-gpu", "spec.runtimeRef.name = 'torch-distributed-gpu': no such ClusterTrainingRuntime (known: torch-distributed)"),
    ((*T[:1], "runtimeRef", "kind"), "TrainingRuntime", "spec.runtimeRef: must name a ClusterTrainingRuntime of trainer.kubeflow.org"),
    # unknown fields, fields not to set
    ((*T, "numProcsPerNode"), 1, "spec.trainer.numProcsPerNode: unknown field (did you mean 'numProcPerNode'?)"),
    (("status",), {}, "status: set by the controller"),
    (("apiVersion",), "kubeflow.org/v1", "apiVersion/kind: expected trainer.kubeflow.org/v1alpha1 TrainJob"),
])
def test_each_rule_refuses_a_bad_value_in_one_line(schemas, params, path, value, expected):
    manifest = copy.deepcopy(render(params))
    _set(manifest, path, value)
    if expected is None:
        assert problems(manifest, schemas) == []
        return
    with pytest.raises(TrainJobError) as error:
        trainjob.check_trainjob(manifest, *schemas)
    message = str(error.value)
    assert expected in message and "\n" not in message
    assert message.startswith("TrainJob rejected: ")


def test_more_processes_than_gpus_is_refused(schemas, params):
    settings = params.trainjob.model_copy(update={
        "proc_per_node": 4, "resources_per_node": params.trainjob.resources_per_node.model_copy(update={"gpu": 2})})
    with pytest.raises(TrainJobError, match=r"numProcPerNode = 4: more processes than the 2 GPU\(s\) per node"):
        trainjob.check_trainjob(render(params, settings), *schemas)


@pytest.mark.parametrize("raw, expected", [
    ({"trainjob": {"nmae": "x"}}, "params.yaml: unknown key 'trainjob.nmae' (allowed: name, namespace, runtime,"),
    ({"trainjob": {"resources_per_node": {"gpus": 1}}}, "unknown key 'trainjob.resources_per_node.gpus' (allowed: cpu, memory, gpu)"),
    ({"trainjob": {"name": "Product_Train"}}, "params.yaml: trainjob.name = 'Product_Train': String should match pattern"),
    ({"trainjob": {"num_nodes": 0}}, "params.yaml: trainjob.num_nodes = 0: Input should be greater than or equal to 1"),
    ({"trainjob": {"proc_per_node": "auto"}}, "params.yaml: trainjob.proc_per_node = 'auto': Input should be a valid integer"),
    ({"trainjob": {"resources_per_node": {"memory": "8 gigs"}}}, "trainjob.resources_per_node.memory = '8 gigs': String should match"),
    ({"trainjob": {"data_remote": "/mnt/dvc"}}, "params.yaml: trainjob.data_remote = '/mnt/dvc': String should match pattern"),
])
def test_bad_trainjob_params_give_one_line(raw, expected):
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_kubernetes_quantities():
    assert trainjob.quantity("500m") == Decimal("0.5")
    assert trainjob.quantity("8Gi") == 8 * 2**30
    assert trainjob.quantity("1e3") == 1000
    assert trainjob.quantity(2) == 2
    for bad in ("8 gigs", "1.2.3", "Gi", "", True):
        with pytest.raises(ValueError):
            trainjob.quantity(bad)


def test_data_version_comes_from_dvc_lock(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {"preprocess": {"outs": [
        {"path": "data/processed", "hash": "md5", "md5": "f" * 32 + ".dir"}]}}}))
    assert trainjob.data_md5_from_lock(lock) == "f" * 32 + ".dir"
    lock.write_text(yaml.safe_dump({"stages": {}}))
    with pytest.raises(MissingInput, match="no output data/processed"):
        trainjob.data_md5_from_lock(lock)
    with pytest.raises(MissingInput, match="no dvc.lock"):
        trainjob.data_md5_from_lock(tmp_path / "missing.lock")


def test_cli_writes_the_trainjob(schemas, tmp_path):
    out = tmp_path / "job" / "trainjob.yaml"
    result = subprocess.run([sys.executable, "-m", "productstudio.cli", "deploy", "trainjob", "--out", str(out),
                             "--data-md5", "e" * 32 + ".dir"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout and "kubectl apply -f" in result.stdout
    manifest = yaml.safe_load(out.read_text())
    assert manifest["metadata"]["annotations"]["productstudio/data-md5"] == "e" * 32 + ".dir"
    assert problems(manifest, schemas) == []
    # A rule the schema lacks stops the command with one line, and nothing is written.
    bad = tmp_path / "params.yaml"
    bad.write_text("trainjob:\n  image: ghcr.io/productstudio/productstudio:latest\n")
    result = subprocess.run([sys.executable, "-m", "productstudio.cli", "deploy", "trainjob", "--params", str(bad),
                             "--out", str(tmp_path / "bad.yaml"), "--example"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 2
    assert result.stderr.strip() == ("productstudio deploy: error: TrainJob rejected: spec.trainer.image = "
                                      "'ghcr.io/productstudio/productstudio:latest': ':latest' moves; pin a version tag "
                                      "or an @sha256 digest")
    assert not (tmp_path / "bad.yaml").exists()


def test_cli_help_explains_every_flag():
    result = subprocess.run([sys.executable, "-m", "productstudio.cli", "deploy", "trainjob", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0
    squashed = "".join(result.stdout.split())  # argparse wraps lines (even inside paths): compare without spaces
    for words in ("torchrun", "PET_*", "dvc.lock", "--out OUT the TrainJob YAML to write (default: deploy/kubeflow-trainer/trainjob.yaml)",
                  "--data-md5", "--crd", "(default: ../shared/schemas/kubeflow-trainer/torch_distributed.yaml)",
                  "--example", "--params PARAMS params file (default: params.yaml)", "Secret", "not :latest"):
        assert "".join(words.split()) in squashed, words


def test_copy_tree_between_local_folders_and_an_object_store(tmp_path):
    src = tmp_path / "out"
    (src / "train" / "generator").mkdir(parents=True)
    (src / "train" / "generator" / "weights.bin").write_bytes(b"\x00\x01")
    (src / "plots").mkdir()
    (src / "plots" / "train_loss.csv").write_text("step,loss\n")
    trainjob.copy_tree(str(src), "memory://bucket/jobs/j1")
    trainjob.copy_tree("memory://bucket/jobs/j1/train", str(tmp_path / "back"))
    assert (tmp_path / "back" / "generator" / "weights.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(MissingInput, match="nothing to copy"):
        trainjob.copy_tree("memory://bucket/jobs/none", str(tmp_path / "x"))


class FakeCluster:
    """The parts of CustomObjectsApi and CoreV1Api the hand-off uses. Creating a TrainJob runs its script here
    once per node, with the runtime's PET_* variables and a stand-in torchrun, and marks it Complete."""

    def __init__(self, tmp_path: Path, secret: dict[str, str], conditions=None):
        self.tmp, self.secret, self.conditions = tmp_path, secret, conditions
        self.created, self.deleted, self.polls = [], [], 0

    def read_namespaced_secret(self, name, namespace):
        import base64
        from types import SimpleNamespace

        assert (name, namespace) == ("product-studio-s3", "product-studio")
        return SimpleNamespace(data={k: base64.b64encode(v.encode()).decode() for k, v in self.secret.items()})

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        assert (group, version, namespace, plural) == ("trainer.kubeflow.org", "v1alpha1", "product-studio", "trainjobs")
        self.created.append(body)
        if self.conditions is None:
            self._run(body)

    def _run(self, body):
        trainer = body["spec"]["trainer"]
        env = {item["name"]: item["value"] for item in trainer["env"] if "value" in item}
        env.update({item["name"]: self.secret[item["valueFrom"]["secretKeyRef"]["key"]]
                    for item in trainer["env"] if "valueFrom" in item})
        bin_dir = self.tmp / "bin"
        bin_dir.mkdir(exist_ok=True)
        fake = bin_dir / "torchrun"
        fake.write_text(TORCHRUN)
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
        path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
        for rank in range(trainer["numNodes"]):
            node = self.tmp / f"node-{rank}"
            node.mkdir()
            subprocess.run(trainer["command"], cwd=node, check=True, env={
                **os.environ, **env, "PATH": path, "PET_NODE_RANK": str(rank), "PET_NNODES": str(trainer["numNodes"]),
                "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"])})
        self.conditions = [{"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "done"}]

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.polls += 1
        return {"metadata": {"name": name}, "status": {"conditions": self.conditions}}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.deleted.append(name)


# Stands in for torchrun (which would start 'productstudio train'): records its arguments and what the data pull
# left, and writes what training writes.
TORCHRUN = """#!/usr/bin/env bash
set -e
echo "$@" > torchrun-args.txt
ls processed > pulled.txt
mkdir -p out/train/generator out/plots
echo '{"params": {"model": "gan"}, "summary": {"steps": 3, "stopped_by": "max_steps"}}' > out/train/manifest.json
echo "node $PET_NODE_RANK" > out/train/generator/weights.bin
echo step,loss > out/plots/train_loss.csv
"""


def test_kfp_hand_off_pushes_data_runs_the_pod_script_and_fetches_the_generator(schemas, params, tmp_path):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "manifest.json").write_text('{"counts": {"train": 2}}')
    (dataset / "train-00000.images.npy").write_bytes(b"\x93NUMPY fake")
    remote, published = tmp_path / "dvc-remote", tmp_path / "published"
    settings = params.trainjob.model_copy(update={"data_remote": str(remote), "output_uri": str(published)})
    run_params = params.model_copy(update={"trainjob": settings})
    cluster = FakeCluster(tmp_path, {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "key"})
    model, plots = tmp_path / "model", tmp_path / "loss"

    result = trainjob.train_on_cluster(run_params, dataset, model, plots, mlflow_tracking_uri="http://mlflow.kfp:5000",
                                       custom_api=cluster, core_api=cluster, poll_s=0)

    (manifest,) = cluster.created
    assert manifest["metadata"]["name"] == result["name"] and result["name"].startswith("product-studio-train-")
    assert problems(manifest, schemas) == []  # what the launcher creates is valid against the CRD
    env = {item["name"]: item.get("value") for item in manifest["spec"]["trainer"]["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.kfp:5000"  # the pipeline's tracking server wins
    assert env["PRODUCTSTUDIO_DATA_MD5"] == result["data_md5"] and result["data_md5"].endswith(".dir")
    for rank in (0, 1):  # every node pulled the pushed dataset by its hash and ran torchrun on it
        job = tmp_path / f"node-{rank}" / "job"
        assert (job / "processed" / "manifest.json").read_text() == '{"counts": {"train": 2}}'
        assert (job / "pulled.txt").read_text().split() == ["manifest.json", "train-00000.images.npy"]
        assert (job / "torchrun-args.txt").read_text().split()[:4] == ["--module", "productstudio.cli", "train", "--params"]
        assert yaml.safe_load((job / "params.yaml").read_text()) == {"train": section_dict(params.train)}
    # Node 0 alone published; its training directory and curves are the task's outputs now.
    assert (model / "generator" / "weights.bin").read_text() == "node 0\n"
    assert json.loads((model / "manifest.json").read_text())["summary"]["steps"] == 3
    assert (plots / "train_loss.csv").is_file()
    assert "AWS_ACCESS_KEY_ID" not in os.environ  # the launcher's credentials do not outlive the call


def test_wait_for_trainjob_reports_failure_and_deletes_after_the_timeout():
    failed = FakeCluster(Path("."), {}, [{"type": "Created", "status": "True"},
                                          {"type": "Failed", "status": "True", "reason": "JobFailed", "message": "OOMKilled"}])
    with pytest.raises(ServiceError, match="TrainJob ns/j failed: JobFailed: OOMKilled"):
        trainjob.wait_for_trainjob(failed, "j", "ns", timeout_s=60, sleep=lambda s: None)
    running = FakeCluster(Path("."), {}, [{"type": "Complete", "status": "False"}])
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    with pytest.raises(ServiceError, match="did not finish within 1 minutes: deleted"):
        trainjob.wait_for_trainjob(running, "j", "ns", timeout_s=60, poll_s=15, clock=lambda: now[0], sleep=sleep)
    assert running.deleted == ["j"] and running.polls == 5


def test_kfp_package_hands_the_train_task_to_a_trainjob(tmp_path):
    from pipelines.product_studio import LAUNCHER_RESOURCES, RESOURCES, TRAINJOB_PACKAGE_PATH, compile_pipeline
    from tests.unit.test_pipeline_placement import tasks_and_executors

    path = compile_pipeline(tmp_path / "trainjob.yaml", train_on="trainjob")
    assert path.read_text() == TRAINJOB_PACKAGE_PATH.read_text(), (
        f"{TRAINJOB_PACKAGE_PATH} is stale: run 'python -m pipelines.product_studio compile --train-on trainjob'")
    package = yaml.safe_load(path.read_text())
    assert package["pipelineInfo"]["name"] == "product-studio-trainjob"
    tasks = package["root"]["dag"]["tasks"]
    assert tasks["train-trainjob"]["componentRef"]["name"] == "comp-train-trainjob"
    assert "train_on_cluster" in yaml.safe_dump(package["deploymentSpec"]["executors"]["exec-train-trainjob"])
    # Evaluate, quantize and register read the TrainJob's generator where they read the in-pod one.
    assert tasks["evaluate"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "train-trainjob"
    named = tasks_and_executors(compile_pipeline(tmp_path / "gpu.yaml", gpu=True, train_on="trainjob"))
    assert set(named) == set(RESOURCES)
    task, container = named["train"]
    resources = container["resources"]
    assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == (LAUNCHER_RESOURCES["train"][1],
                                                                                  LAUNCHER_RESOURCES["train"][3])
    assert "accelerator" not in resources  # the TrainJob's nodes ask for GPUs, not the launcher
    assert "retryPolicy" in task and task["cachingOptions"]["enableCache"] is True
    assert named["evaluate"][1]["resources"]["accelerator"]["resourceCount"] == "1"


def test_kfp_task_renders_the_same_trainjob_from_default_params(schemas):
    # The compiled package passes params_yaml ("" = the built-in defaults) to the task, which renders with the
    # library function; the result must be valid before the cluster ever sees it.
    defaults = parse_params(yaml.safe_load(""), "params_yaml")
    manifest = trainjob.render_trainjob(defaults.trainjob, section_dict(defaults.train), "d" * 32 + ".dir",
                                        name=trainjob.unique_name(defaults.trainjob.name))
    assert problems(manifest, schemas) == []
