"""The Product Studio Kubeflow pipeline: the DVC stages as KFP tasks.

    ingest -> validate -> preprocess -> {train-classifier, real-stats}
           -> {train, train-baseline} -> {evaluate, evaluate-baseline, quantize} -> register -> promote

train-classifier and real-stats depend only on preprocess (they run in parallel on a cluster; kfp.local
runs tasks one after another). train waits for real-stats too: it measures KID against the cached
real features every ``train.kid_every`` steps (the time-to-quality curve). train-baseline trains the
baseline the GAN is weighed against (``train`` overlaid with ``baseline``: a CVAE by default), and
evaluate-baseline judges it with the same protocol, seeds and real features as evaluate.

The pipeline takes the *text* of a params.yaml as its ``params_yaml`` parameter (the same file DVC
reads), so a run records exactly which settings it used. In the compiled package its default is the
empty string, which means the library's built-in defaults (``productstudio.config``, the same values
as the repo's params.yaml) and keeps the package independent of the checkout's params.yaml.
``run-local`` and ``run-cluster`` pass ``--params`` (default: ./params.yaml, as DVC uses).

MLflow tracking is off unless the ``mlflow_tracking_uri`` parameter is set (``--mlflow-tracking-uri``):
a cluster may have no tracking server. When set, train and evaluate log to that store (evaluate to the
training run), register adds the generator to its Model Registry as the 'challenger' and promote
judges it against the 'champion' (params ``promote``); without it, register and promote skip.

Relative paths inside params (``ingest.fashion_mnist_dir``, ``ingest.image_folder``, ...) are resolved
by each task against its working directory: for ``run-local`` that is the directory you run from (run
it from the repository root, like ``dvc repro``); in a cluster it is the container's, where
``../shared/data`` does not exist, so Fashion-MNIST is downloaded (md5-checked) instead.

Commands (``python -m pipelines.product_studio --help``)::

    compile      write pipelines/product_studio.yaml (the committed package; `make pipeline-yaml`); --gpu
                 for a package whose torch steps each ask for one GPU; --train-on trainjob for
                 pipelines/product_studio_trainjob.yaml, whose train task hands training to a TrainJob

Each task carries its cluster resources (``RESOURCES``: CPU and memory requests and limits), a retry policy
when its outputs depend only on its inputs (``RETRIED``) and KFP caching except where a step must rerun
(``UNCACHED``: ingest, register, promote). kfp.local ignores the resources (with a warning) and runs retries.

With ``compile --train-on trainjob`` the train task (``components/train_trainjob.py``) does not train: it pushes
its dataset to the DVC remote, creates a Kubeflow Trainer TrainJob rendered from params ``trainjob`` and ``train``
(``productstudio.deploy.trainjob``, the renderer 'productstudio deploy trainjob' uses), waits for it and copies the
generator its node 0 published back into its ``model`` output; evaluate, quantize and register read it as before.
That task asks for little (``LAUNCHER_RESOURCES``, never a GPU); the TrainJob's nodes ask for
``trainjob.resources_per_node``. It needs a cluster with Kubeflow Trainer, so it is compiled and checked here,
not run.
    run-local    run the pipeline here with kfp.local's SubprocessRunner (this interpreter)
    run-cluster  submit the compiled package to a Kubeflow Pipelines endpoint
"""

# No `from __future__ import annotations`: KFP reads the pipeline signature's types at runtime.

import argparse
import contextlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

from kfp import compiler, dsl

from components import evaluate, ingest, preprocess, promote, quantize, real_stats, register, train, train_classifier, validate
from components.train_trainjob import train_trainjob

PIPELINE_NAME = "product-studio"
PACKAGE_PATH = Path(__file__).resolve().with_name("product_studio.yaml")
TRAINJOB_PACKAGE_PATH = PACKAGE_PATH.with_name("product_studio_trainjob.yaml")  # compile --train-on trainjob
TRAIN_ON = ("pod", "trainjob")  # where the train task trains: in its own pod, or on a Kubeflow Trainer TrainJob

# What each task asks of a cluster (kfp.local ignores these, with a warning): CPU request/limit and memory
# request/limit. Starting points for the default data: this 2-core, 24 GiB machine runs every step; train,
# evaluate and real-stats use every core they get. Raise them for bigger data.
RESOURCES = {
    "ingest": ("500m", "1", "1Gi", "2Gi"),
    "validate": ("1", "2", "2Gi", "4Gi"),
    "preprocess": ("1", "2", "2Gi", "4Gi"),
    "train-classifier": ("2", "4", "2Gi", "4Gi"),
    "real-stats": ("2", "4", "4Gi", "8Gi"),
    "train": ("2", "4", "4Gi", "8Gi"),
    "train-baseline": ("2", "4", "4Gi", "8Gi"),
    "evaluate": ("2", "4", "4Gi", "8Gi"),
    "evaluate-baseline": ("2", "4", "4Gi", "8Gi"),
    "quantize": ("2", "4", "4Gi", "8Gi"),
    "register": ("500m", "1", "1Gi", "2Gi"),
    "promote": ("1", "2", "2Gi", "4Gi"),
}
# Retried (a lost node, an OOM kill, a network blip): steps whose outputs depend only on their inputs. Not
# validate (its failure is a verdict on the data), not register/promote (they change the registry).
RETRIED = ("ingest", "preprocess", "train-classifier", "real-stats", "train", "train-baseline", "evaluate",
           "evaluate-baseline", "quantize")
RETRIES, RETRY_BACKOFF = 2, "60s"
# Never served from KFP's cache: ingest (the source can change under the same params) and the registry steps
# (their effect is on the registry, not in their outputs). Every other step is deterministic: same inputs and
# params, same outputs, so a cached result is the result.
UNCACHED = ("ingest", "register", "promote")
# With ``compile --gpu``: one NVIDIA GPU for the steps that run networks in torch.
GPU_TASKS = ("train", "train-baseline", "train-classifier", "real-stats", "evaluate", "evaluate-baseline")
# With ``compile --train-on trainjob``: the train task only launches the TrainJob and waits (no GPU either).
LAUNCHER_RESOURCES = {"train": ("250m", "500m", "512Mi", "1Gi")}


def place(task, name: str, resources: dict, retried: tuple = (), uncached: tuple = (), gpu: bool = False):
    """``task`` named ``name``, with its CPU/memory requests and limits from ``resources``, a retry policy when
    it is in ``retried``, caching unless it is in ``uncached``, and one NVIDIA GPU when ``gpu``."""
    cpu_request, cpu_limit, memory_request, memory_limit = resources[name]
    task.set_display_name(name)
    task.set_cpu_request(cpu_request).set_cpu_limit(cpu_limit)
    task.set_memory_request(memory_request).set_memory_limit(memory_limit)
    if name in retried:
        task.set_retry(num_retries=RETRIES, backoff_duration=RETRY_BACKOFF, backoff_factor=2.0)
    task.set_caching_options(enable_caching=name not in uncached)
    if gpu:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    return task


def placed(gpu: bool, task, name: str):
    """A task of this pipeline, placed from the tables above."""
    return place(task, name, RESOURCES, RETRIED, UNCACHED, gpu=gpu and name in GPU_TASKS)


class Outputs(NamedTuple):
    dataset: dsl.Dataset
    validation: dsl.Artifact
    model: dsl.Model
    evaluation: dsl.Artifact
    quantized: dsl.Model
    baseline_evaluation: dsl.Artifact


def build_pipeline(gpu: bool = False, train_on: str = "pod"):
    """The pipeline function (decorated: KFP traces its body here). ``gpu``: GPU_TASKS each ask for one GPU.
    ``train_on``: "pod" trains in the train task itself, "trainjob" hands it to a Kubeflow Trainer TrainJob."""
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {', '.join(TRAIN_ON)}, not {train_on!r}")
    description = ("Product images: ingest a source, validate it (Great Expectations), preprocess it into tensors, "
                   "train a generator (and a CVAE baseline) and a product classifier, cache the real Inception features, "
                   "evaluate both (FID/KID), quantize the generator to int8 with its measured speed-up and quality cost, "
                   "register and promote it in MLflow.")
    if train_on == "trainjob":
        description += " The generator trains on a Kubeflow Trainer TrainJob (params trainjob)."

    @dsl.pipeline(
        name=PIPELINE_NAME if train_on == "pod" else f"{PIPELINE_NAME}-trainjob",
        description=description,
    )
    def product_studio(params_yaml: str = "", quarantine: bool = False, mlflow_tracking_uri: str = "") -> Outputs:
        """Ingest -> validate -> preprocess -> {train, train-baseline, train-classifier, real-stats} -> evaluate ... promote.

        Args:
            params_yaml: The text of a params.yaml (sections ingest, validate, preprocess, train, evaluate); "" means defaults.
            quarantine: Let validation set bad files aside instead of failing the run.
            mlflow_tracking_uri: MLflow store for train and evaluate; "" logs nothing.
        """
        # A source folder can change under the same params: never reuse a cached ingest (UNCACHED). Its fresh
        # output artifact changes the cache keys of the tasks downstream, so they rerun too.
        ingest_task = placed(gpu, ingest(params_yaml=params_yaml), "ingest")
        validate_task = placed(gpu, validate(
            params_yaml=params_yaml,
            raw=ingest_task.outputs["raw"],
            quarantine=quarantine,
        ), "validate")
        preprocess_task = placed(gpu, preprocess(
            params_yaml=params_yaml,
            raw=ingest_task.outputs["raw"],
            validation=validate_task.outputs["validation"],
        ), "preprocess")
        dataset = preprocess_task.outputs["dataset"]
        classifier_task = placed(gpu, train_classifier(params_yaml=params_yaml, dataset=dataset), "train-classifier")
        real_stats_task = placed(gpu, real_stats(params_yaml=params_yaml, dataset=dataset), "real-stats")
        stats = real_stats_task.outputs["stats"]
        if train_on == "trainjob":
            # Same outputs (model, loss) as the in-pod train task; the TrainJob's nodes do the work.
            train_task = place(train_trainjob(params_yaml=params_yaml, dataset=dataset,
                                              mlflow_tracking_uri=mlflow_tracking_uri),
                               "train", LAUNCHER_RESOURCES, RETRIED, UNCACHED)
        else:
            train_task = placed(gpu, train(params_yaml=params_yaml, dataset=dataset, stats=stats,
                                      mlflow_tracking_uri=mlflow_tracking_uri), "train")
        evaluate_task = placed(gpu, evaluate(
            params_yaml=params_yaml,
            model=train_task.outputs["model"],
            dataset=dataset,
            classifier=classifier_task.outputs["classifier"],
            stats=stats,
            mlflow_tracking_uri=mlflow_tracking_uri,
        ), "evaluate")
        baseline_task = placed(gpu, train(
            params_yaml=params_yaml, dataset=dataset, stats=stats, baseline=True, mlflow_tracking_uri=mlflow_tracking_uri
        ), "train-baseline")
        evaluate_baseline_task = placed(gpu, evaluate(
            params_yaml=params_yaml,
            model=baseline_task.outputs["model"],
            dataset=dataset,
            classifier=classifier_task.outputs["classifier"],
            stats=stats,
            mlflow_tracking_uri=mlflow_tracking_uri,
        ), "evaluate-baseline")
        quantize_task = placed(gpu, quantize(
            params_yaml=params_yaml,
            model=train_task.outputs["model"],
            dataset=dataset,
            stats=stats,
        ), "quantize")
        # The registry needs a tracking server: without mlflow_tracking_uri both tasks say so and skip.
        register_task = placed(gpu, register(
            params_yaml=params_yaml,
            model=train_task.outputs["model"],
            evaluation=evaluate_task.outputs["evaluation"],
            dataset=dataset,
            int8=quantize_task.outputs["quantized"],
            mlflow_tracking_uri=mlflow_tracking_uri,
        ), "register")
        placed(gpu, promote(
            params_yaml=params_yaml,
            registered=register_task.outputs["registered"],
            dataset=dataset,
            stats=stats,
            mlflow_tracking_uri=mlflow_tracking_uri,
        ), "promote")
        return Outputs(
            dataset=dataset,
            validation=validate_task.outputs["validation"],
            model=train_task.outputs["model"],
            evaluation=evaluate_task.outputs["evaluation"],
            quantized=quantize_task.outputs["quantized"],
            baseline_evaluation=evaluate_baseline_task.outputs["evaluation"],
        )

    return product_studio


product_studio = build_pipeline()


def compile_pipeline(path: str | Path | None = None, gpu: bool = False, train_on: str = "pod") -> Path:
    """Compile the pipeline to a KFP package (YAML). Deterministic: same code, same bytes. ``gpu``: the
    GPU_TASKS each ask for one NVIDIA GPU. ``train_on="trainjob"``: the train task hands training to a TrainJob.
    ``path`` defaults to PACKAGE_PATH (TRAINJOB_PACKAGE_PATH for a TrainJob package)."""
    path = Path(path or (TRAINJOB_PACKAGE_PATH if train_on == "trainjob" else PACKAGE_PATH))
    path.parent.mkdir(parents=True, exist_ok=True)
    default = not gpu and train_on == "pod"
    compiler.Compiler().compile(pipeline_func=product_studio if default else build_pipeline(gpu, train_on),
                                package_path=str(path))
    return path


def _read_params(params: Optional[str | Path]) -> str:
    """The params file's text, checked up front so a typo fails here with one line, not in a task."""
    if params is None:
        return ""
    from productstudio.config import load_params

    load_params(params)  # raises ParamsError with a one-line message
    return Path(params).read_text()


@contextlib.contextmanager
def _environment(tmpdir: Path) -> Iterator[None]:
    """TMPDIR (each kfp.local task leaves a temp folder) and quiet tools, for the tasks we start."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    wanted = {
        "TMPDIR": str(tmpdir),
        "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true"),
        "DVC_NO_ANALYTICS": os.environ.get("DVC_NO_ANALYTICS", "1"),
    }
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def local_session(root: str | Path) -> Iterator[Path]:
    """kfp.local's SubprocessRunner in this interpreter, for a pipeline called inside the block; yields ``root``.

    Under ``root``: ``outputs/`` (the pipeline root: every task's artifacts), ``tmp/`` (TMPDIR of the tasks) and
    ``workspace/`` (kfp.local's workspace, removed by kfp when the run ends). A failed task raises RuntimeError
    naming it (its log is printed above)."""
    from kfp import local

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with _environment(root / "tmp"), warnings.catch_warnings():
        # Our image name has no "python" in it; the SubprocessRunner warns about that for every task.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        # The baseline tasks' display names (train-baseline, evaluate-baseline) are for the cluster's UI.
        warnings.filterwarnings("ignore", message=r".*settings \['display_name'\] have no effect.*", category=UserWarning)
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(root / "outputs"),
            workspace_root=str(root / "workspace"),
            raise_on_error=True,
        )
        yield root


def run_local(
    params: Optional[str | Path], root: str | Path, quarantine: bool = False, mlflow_tracking_uri: str = ""
) -> dict[str, str]:
    """Run the pipeline with kfp.local (``local_session``); return output paths."""
    params_yaml = _read_params(params)
    with local_session(root):
        task = product_studio(params_yaml=params_yaml, quarantine=quarantine, mlflow_tracking_uri=mlflow_tracking_uri)
    return {name: artifact.path for name, artifact in task.outputs.items()}


def run_cluster(
    host: str,
    params: Optional[str | Path] = None,
    package: str | Path = PACKAGE_PATH,
    quarantine: bool = False,
    experiment: Optional[str] = None,
    run_name: Optional[str] = None,
    namespace: Optional[str] = None,
    pipeline_root: Optional[str] = None,
    token: Optional[str] = None,
    wait: bool = False,
    mlflow_tracking_uri: str = "",
) -> str:
    """Submit the compiled package to the KFP API at ``host``; return the run id.

    ``token`` is a bearer token for an authenticated endpoint (kfp.Client's ``existing_token``).
    """
    import kfp

    # "kubeflow" is kfp.Client's own default namespace.
    client = kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token)
    result = client.create_run_from_pipeline_package(
        str(package),
        arguments={"params_yaml": _read_params(params), "quarantine": quarantine, "mlflow_tracking_uri": mlflow_tracking_uri},
        run_name=run_name,
        experiment_name=experiment,
        namespace=namespace,
        pipeline_root=pipeline_root,
    )
    if wait:
        run = result.wait_for_run_completion()
        print(f"run {result.run_id} finished: {run.state}")
        if str(run.state).upper() != "SUCCEEDED":
            raise SystemExit(1)
    return result.run_id


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.product_studio",
        description="The Product Studio KFP pipeline (ingest -> validate -> preprocess -> train, classifier, "
        "real-stats -> evaluate): compile, run locally, or submit.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    compile_cmd = commands.add_parser("compile", help="compile the pipeline to YAML (what `make pipeline-yaml` does)")
    compile_cmd.add_argument(
        "--output", type=Path, default=None,
        help=f"where to write the package (default: {PACKAGE_PATH}, or {TRAINJOB_PACKAGE_PATH} with --train-on trainjob)"
    )
    compile_cmd.add_argument("--gpu", action="store_true",
                             help="each of " + ", ".join(GPU_TASKS) + " asks for one NVIDIA GPU (nvidia.com/gpu)")
    compile_cmd.add_argument(
        "--train-on", choices=TRAIN_ON, default="pod",
        help="pod: the train task trains in its own pod; trainjob: it creates a Kubeflow Trainer TrainJob from "
        "params trainjob/train (productstudio deploy trainjob --help), waits for it and passes its generator on; "
        "the TrainJob's nodes get trainjob.resources_per_node, not --gpu (default: %(default)s)")

    local_cmd = commands.add_parser(
        "run-local",
        help="run the pipeline here with kfp.local.SubprocessRunner(use_venv=False), no cluster needed",
        description="Run every task as a subprocess of this Python interpreter (productstudio must be installed "
        "in it). Relative paths in the params resolve against the current directory: run from the repo root.",
    )
    local_cmd.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file to use (default: %(default)s)")
    local_cmd.add_argument(
        "--root", type=Path, required=True, help="folder for this run: outputs/ (pipeline root), tmp/ (TMPDIR)"
    )
    local_cmd.add_argument("--quarantine", action="store_true", help="set bad files aside instead of failing")
    local_cmd.add_argument(
        "--mlflow-tracking-uri", default="", help="MLflow store for train and evaluate, e.g. sqlite:///mlflow.db (default: no tracking)"
    )

    cluster_cmd = commands.add_parser(
        "run-cluster",
        help="submit the compiled package to a Kubeflow Pipelines API (kfp.Client)",
        description="Submit the compiled package (compile it first: `make pipeline-yaml`) with "
        "kfp.Client(host).create_run_from_pipeline_package. The image named in the package "
        "(components.BASE_IMAGE, built from deploy/docker/Dockerfile) must be pullable by the cluster. "
        "Prints the run id. The params file's text travels as the params_yaml argument; its relative "
        "paths resolve inside the task containers.",
    )
    cluster_cmd.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080 (port-forward of ml-pipeline-ui)")
    cluster_cmd.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file whose text is passed as params_yaml (default: %(default)s)"
    )
    cluster_cmd.add_argument("--package", type=Path, default=PACKAGE_PATH, help="compiled pipeline (default: %(default)s)")
    cluster_cmd.add_argument("--quarantine", action="store_true", help="set bad files aside instead of failing")
    cluster_cmd.add_argument("--experiment", default=None, help="experiment name (default: KFP's 'Default')")
    cluster_cmd.add_argument("--run-name", default=None, help="run name shown in the UI")
    cluster_cmd.add_argument("--namespace", default=None, help="Kubernetes namespace (multi-user deployments)")
    cluster_cmd.add_argument("--pipeline-root", default=None, help="artifact root, e.g. s3://bucket/pipelines (default: the cluster's)")
    cluster_cmd.add_argument(
        "--token",
        default=os.environ.get("KFP_TOKEN"),
        help="bearer token for an authenticated endpoint (default: $KFP_TOKEN; none)",
    )
    cluster_cmd.add_argument("--wait", action="store_true", help="wait for the run to finish; exit 1 unless it succeeded")
    cluster_cmd.add_argument(
        "--mlflow-tracking-uri", default="", help="MLflow server the tasks can reach, e.g. http://mlflow.mlflow:5000 (default: no tracking)"
    )

    args = parser.parse_args(argv)
    if args.command == "compile":
        print(compile_pipeline(args.output, gpu=args.gpu, train_on=args.train_on))
    elif args.command == "run-local":
        outputs = run_local(args.params, args.root, quarantine=args.quarantine, mlflow_tracking_uri=args.mlflow_tracking_uri)
        print(json.dumps(outputs, indent=2, sort_keys=True))
    else:
        run_id = run_cluster(
            args.host,
            params=args.params,
            package=args.package,
            quarantine=args.quarantine,
            experiment=args.experiment,
            run_name=args.run_name,
            namespace=args.namespace,
            pipeline_root=args.pipeline_root,
            token=args.token,
            wait=args.wait,
            mlflow_tracking_uri=args.mlflow_tracking_uri,
        )
        print(run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
