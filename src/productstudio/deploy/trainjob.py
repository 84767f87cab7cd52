"""Kubeflow Trainer ``TrainJob`` (trainer.kubeflow.org/v1alpha1) that runs 'productstudio train' on a cluster.

The job names the ``torch-distributed`` ClusterTrainingRuntime. That runtime starts ``numNodes`` pods from the
trainer image and gives each the ``PET_*`` variables (PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK,
PET_MASTER_ADDR, PET_MASTER_PORT) that ``torchrun`` reads as the defaults of its flags; it does not start
torchrun itself. So each pod runs one short bash script (``trainer_script``):

1. write the ``train`` params it was rendered with (``PRODUCTSTUDIO_PARAMS_YAML``) to ``params.yaml``;
2. pull the processed data by its DVC hash from the team's DVC remote (``trainjob.data_remote``): the image has
   no git checkout, so the script makes a DVC project of its own holding one ``processed.dvc`` file. The hash
   comes from dvc.lock (``productstudio deploy trainjob``) or from the KFP task that pushed its dataset;
3. ``torchrun --module productstudio.cli train ...``: torchrun starts PET_NPROC_PER_NODE processes with the
   standard RANK/WORLD_SIZE/LOCAL_RANK variables that the training code reads;
4. on node 0 only, copy the training directory (generator/, manifest.json, samples, checkpoints) and the loss
   curves to ``<trainjob.output_uri>/<job name>/{train,plots}``, where the KFP hand-off picks them up.

Credentials never appear in the manifest: each name in ``trainjob.secret_keys`` is an env variable taken from
the Secret ``trainjob.credentials_secret`` (``valueFrom.secretKeyRef``).

``trainjob_problems`` validates a manifest offline against the CRD's ``openAPIV3Schema`` (jsonschema: types,
patterns, unknown fields) and adds what the CRD leaves to CEL rules, webhooks or pod creation time: the name, at
least one node, processes per node against GPUs (or CPUs), resource quantities, an image pinned by a tag or
digest, env names and no literal secrets, and a runtimeRef naming a runtime that exists.

``train_on_cluster`` is the KFP hand-off: push the task's dataset to the DVC remote, render and create the
TrainJob through the Kubernetes API, wait for its Complete/Failed condition, copy the outputs back.
"""

from __future__ import annotations

import base64
import contextlib
import os
import posixpath
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

import yaml
from productstudio.deploy.kserve import label_problems, unknown_fields
from productstudio.errors import DataError, MissingInput, ParamsError, ServiceError

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainJob"
RUNTIME_KIND = "ClusterTrainingRuntime"
GPU = "nvidia.com/gpu"
PROCESSED_OUT = "data/processed"  # the dvc.lock output the job trains on
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # the CRD's CEL rule for metadata.name
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by the torch runtime (PET_*) or by torchrun for its processes: a value given here would fight them.
RESERVED_ENV = re.compile(r"^(PET_.*|RANK|LOCAL_RANK|WORLD_SIZE|LOCAL_WORLD_SIZE|GROUP_RANK|MASTER_ADDR|MASTER_PORT)$")
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|API_KEY)", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/@\s]+:[^/@\s]+@")
QUANTITY = re.compile(r"^([+-]?)(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
SUFFIX = {"": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3, "M": 10**6,
          "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
          "Pi": 2**50, "Ei": 2**60}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
DIR_HASH = re.compile(r"^[0-9a-f]{32}\.dir$")  # how DVC names a directory's version (dvc.lock, .dvc files)
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# The committed example (deploy/kubeflow-trainer/trainjob.yaml) is rendered with this data hash, not dvc.lock's,
# so it does not change whenever the data does; a test renders it again and compares.
EXAMPLE_DATA_MD5 = "0123456789abcdef0123456789abcdef.dir"
HEADER = """\
# Rendered by 'productstudio deploy trainjob{flags}' from params.yaml 'trainjob' and 'train'; do not edit by hand.
# Kubeflow Trainer TrainJob: 'productstudio train' under torchrun on the torch-distributed runtime.
# Apply with: kubectl apply -f {file}  (needs the Secret named in credentials_secret, see the README)
"""

# Each node's script. No "$(...)": Kubernetes would expand $(NAME) in a command before bash sees it.
SCRIPT = """\
set -euo pipefail
mkdir -p job && cd job
printf '%s\\n' "$PRODUCTSTUDIO_PARAMS_YAML" > params.yaml
# The image has no git checkout: a DVC project of its own pulls the data version pinned by its hash.
dvc init --no-scm --force --quiet
dvc remote add --force --default data "$PRODUCTSTUDIO_DVC_REMOTE"
printf 'outs:\\n- md5: %s\\n  hash: md5\\n  path: processed\\n' "$PRODUCTSTUDIO_DATA_MD5" > processed.dvc
dvc pull --quiet processed.dvc
# torchrun takes --nnodes, --nproc-per-node, --node-rank and --master-addr/-port from the runtime's PET_* variables.
torchrun --module productstudio.cli train --params params.yaml --processed processed --out out/train --plots out/plots{no_mlflow}
# Node 0 holds the result (rank 0 saves it); it hands it on to whoever started the job.
if [ "${{PET_NODE_RANK:-0}}" = 0 ]; then
  python -c 'import sys; from productstudio.deploy.trainjob import copy_tree; copy_tree(*sys.argv[1:])' out "$PRODUCTSTUDIO_OUTPUT_URI"
fi
"""


class TrainJobError(ParamsError):
    """A TrainJob the cluster would reject, or that breaks the project's rules; the problems on one line."""


def trainer_script(mlflow: bool) -> str:
    return SCRIPT.format(no_mlflow="" if mlflow else " --no-mlflow")


def render_trainjob(settings, train_params: dict, data_md5: str, name: str | None = None,
                    mlflow_tracking_uri: str | None = None) -> dict:
    """The TrainJob for ``settings`` (params.yaml 'trainjob'), training with ``train_params`` (the 'train'
    section as a dict) on the processed data whose DVC hash is ``data_md5``. ``name`` overrides settings.name
    (KFP makes each run's unique) and ``mlflow_tracking_uri`` settings.mlflow_tracking_uri."""
    name = name or settings.name
    tracking = settings.mlflow_tracking_uri if mlflow_tracking_uri is None else mlflow_tracking_uri
    resources = settings.resources_per_node
    requests = {"cpu": resources.cpu, "memory": resources.memory}
    limits = dict(requests)
    if resources.gpu:
        limits[GPU] = resources.gpu  # an extended resource: the limit is the request
    env = [
        {"name": "PRODUCTSTUDIO_PARAMS_YAML", "value": yaml.safe_dump({"train": train_params}, sort_keys=False)},
        {"name": "PRODUCTSTUDIO_DVC_REMOTE", "value": settings.data_remote},
        {"name": "PRODUCTSTUDIO_DATA_MD5", "value": data_md5},
        {"name": "PRODUCTSTUDIO_OUTPUT_URI", "value": f"{settings.output_uri.rstrip('/')}/{name}"},
    ]
    if tracking:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": tracking})
    if settings.s3_endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL", "value": settings.s3_endpoint_url})
    env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": settings.credentials_secret, "key": key}}}
            for key in settings.secret_keys]
    env += [{"name": key, "value": value} for key, value in settings.env.items()]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/name": "product-studio", "app.kubernetes.io/component": "trainer",
                       "app.kubernetes.io/managed-by": "productstudio"},
            "annotations": {"productstudio/data-md5": data_md5, "productstudio/train-model": str(train_params["model"])},
        },
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": RUNTIME_KIND, "name": settings.runtime},
            "activeDeadlineSeconds": settings.timeout_minutes * 60,
            "trainer": {
                "image": settings.image,
                "command": ["bash", "-c", trainer_script(mlflow=bool(tracking))],
                "numNodes": settings.num_nodes,
                "numProcPerNode": settings.proc_per_node,
                "resourcesPerNode": {"requests": requests, "limits": limits},
                "env": env,
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the script, the params) as literal blocks, readable in the committed YAML."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def to_yaml(manifest: dict, file: str, flags: str = "") -> str:
    body = yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
    return HEADER.format(flags=flags, file=file) + body


def write_trainjob(path: str | Path, manifest: dict, crd_path: str | Path | None = None,
                   runtimes_path: str | Path | None = None, flags: str = "") -> Path:
    """Check ``manifest`` (``check_trainjob``) and write it as YAML to ``path``."""
    check_trainjob(manifest, crd_path, runtimes_path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(manifest, path.name, flags))
    return path


def data_md5_from_lock(lock: str | Path = "dvc.lock", out: str = PROCESSED_OUT) -> str:
    """The DVC hash (``<md5>.dir``) of ``out`` as dvc.lock records it: the data version the job trains on."""
    lock = Path(lock)
    if not lock.is_file():
        raise MissingInput(f"{lock}: no dvc.lock to take the data version from (run 'dvc repro preprocess', or "
                           "give --data-md5)")
    for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for output in stage.get("outs", []):
            if output.get("path") == out:
                return output["md5"]
    raise MissingInput(f"{lock}: no output {out} (run 'dvc repro preprocess' and 'dvc push', or give --data-md5)")


# ------------------------------------------------------------------------------------------------
# Validation: the CRD's schema, plus what it leaves to CEL rules, webhooks and pod creation.


def default_schema_dir() -> Path:
    """../shared/schemas/kubeflow-trainer/ beside the repository (where CI has it)."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "schemas" / "kubeflow-trainer"


def default_crd_path() -> Path:
    return default_schema_dir() / "trainer.kubeflow.org_trainjobs.yaml"


def default_runtimes_path() -> Path:
    return default_schema_dir() / "torch_distributed.yaml"


@lru_cache(maxsize=2)
def load_schema(crd_path: str | Path | None = None) -> dict:
    """The v1alpha1 ``openAPIV3Schema`` of the TrainJob CRD."""
    path = Path(crd_path) if crd_path else default_crd_path()
    if not path.is_file():
        raise MissingInput(f"{path}: the Kubeflow Trainer TrainJob CRD is missing")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # a 450 kB YAML: libyaml when present
    for version in yaml.load(path.read_text(), Loader=loader)["spec"]["versions"]:  # noqa: S506 (a safe loader)
        if version["name"] == VERSION:
            return version["schema"]["openAPIV3Schema"]
    raise DataError(f"{path}: no {VERSION} version in the CRD")


def shipped_runtimes(path: str | Path | None = None) -> set[str]:
    """Names of the ClusterTrainingRuntimes in the shipped runtime manifest (torch_distributed.yaml)."""
    path = Path(path) if path else default_runtimes_path()
    if not path.is_file():
        raise MissingInput(f"{path}: the torch-distributed runtime manifest is missing")
    return {doc["metadata"]["name"] for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("apiVersion") == API_VERSION and doc.get("kind") == RUNTIME_KIND}


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(root)"


def schema_problems(manifest: dict, crd_path: str | Path | None = None) -> list[str]:
    """What the CRD's schema rejects (jsonschema) and the fields it does not declare (the API server would
    silently prune them)."""
    import jsonschema

    schema = load_schema(crd_path)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    problems = [f"{_where(error.absolute_path)}: {error.message}" for error in errors]
    return problems + unknown_fields(manifest, schema)


def quantity(text) -> Decimal:
    """A Kubernetes resource quantity ("500m", "8Gi", "1e3", 2) as a number; ValueError when it is not one."""
    match = QUANTITY.match(str(text))
    if not match or isinstance(text, bool):
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    sign, number, suffix = match.groups()
    try:
        scale = Decimal(f"1{suffix}") if suffix and suffix[0] in "eE" else Decimal(SUFFIX[suffix or ""])
        return Decimal(sign + number) * scale
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from None


def _image_problem(image) -> str | None:
    if not isinstance(image, str) or not image:
        return "spec.trainer.image: missing (the runtime's default image has no productstudio)"
    if DIGEST.search(image):
        return None
    tag = image.rpartition("/")[2].partition(":")[2]  # after the last "/": a registry port is no tag
    if not tag or not TAG.match(tag):
        return f"spec.trainer.image = {image!r}: pin it with a tag or an @sha256 digest"
    if tag == "latest":
        return f"spec.trainer.image = {image!r}: ':latest' moves; pin a version tag or an @sha256 digest"
    return None


def _resource_problems(trainer: dict) -> list[str]:
    where = "spec.trainer.resourcesPerNode"
    resources = trainer.get("resourcesPerNode") or {}
    values: dict[str, dict[str, Decimal]] = {"requests": {}, "limits": {}}
    problems = []
    for kind in values:
        for key, text in (resources.get(kind) or {}).items():
            try:
                values[kind][key] = quantity(text)
            except ValueError as error:
                problems.append(f"{where}.{kind}.{key}: {error}")
                continue
            if values[kind][key] < 0:
                problems.append(f"{where}.{kind}.{key} = {text!r}: must not be negative")
    requests, limits = values["requests"], values["limits"]
    for key in requests.keys() & limits.keys():
        if requests[key] > limits[key]:
            problems.append(f"{where}.requests.{key} = {resources['requests'][key]!r}: more than its limit "
                            f"{resources['limits'][key]!r} (pods would not be created)")
    gpus = limits.get(GPU, requests.get(GPU, Decimal(0)))
    if gpus != gpus.to_integral_value():
        problems.append(f"{where}.limits.{GPU} = {gpus}: GPUs come whole")
    if GPU in requests and GPU in limits and requests[GPU] != limits[GPU]:
        problems.append(f"{where}: requests and limits of {GPU} must be equal (an extended resource)")
    procs = trainer.get("numProcPerNode")
    if isinstance(procs, int) and not isinstance(procs, bool):
        if gpus > 0 and procs > gpus:
            problems.append(f"spec.trainer.numProcPerNode = {procs}: more processes than the {gpus} GPU(s) per node "
                            "(NCCL needs one GPU per process)")
        cpus = limits.get("cpu", requests.get("cpu"))
        if gpus == 0 and cpus is not None and procs > max(1, int(cpus)):
            problems.append(f"spec.trainer.numProcPerNode = {procs}: more processes than the {cpus} CPU(s) per node")
    return problems


def _env_problems(env: list) -> list[str]:
    problems, seen = [], set()
    for item in env or []:
        if not isinstance(item, dict):
            continue  # the schema reports it
        name = item.get("name")
        where = f"spec.trainer.env.{name}"
        if not isinstance(name, str) or not ENV_NAME.match(name):
            problems.append(f"spec.trainer.env: {name!r} is not a valid variable name (letters, digits, '_')")
            continue
        if name in seen:
            problems.append(f"{where}: set twice")
        seen.add(name)
        if RESERVED_ENV.match(name):
            problems.append(f"{where}: reserved (the torch runtime or torchrun sets it)")
        value, source = item.get("value"), item.get("valueFrom")
        if value is not None and source is not None:
            problems.append(f"{where}: has both value and valueFrom")
        if source is None and SECRET_NAME.search(name):
            problems.append(f"{where}: looks like a credential; take it from a Secret (valueFrom.secretKeyRef), "
                            "never a literal value")
        if isinstance(value, str) and URL_WITH_PASSWORD.search(value):
            problems.append(f"{where}: a URL with a password in it; put credentials in a Secret")
        secret = (source or {}).get("secretKeyRef")
        if isinstance(secret, dict) and not secret.get("name"):
            problems.append(f"{where}.valueFrom.secretKeyRef.name: missing (which Secret?)")
        if name == "PRODUCTSTUDIO_DATA_MD5" and not DIR_HASH.match(str(value)):
            problems.append(f"{where} = {value!r}: not a DVC directory hash (32 hex digits + '.dir', as in dvc.lock)")
    return problems


def _metadata_problems(metadata: dict) -> list[str]:
    problems = [f"metadata.{key}: unknown or not settable field" for key in metadata
                if key not in ("name", "namespace", "labels", "annotations")]
    name = metadata.get("name")
    if not isinstance(name, str) or not DNS_1035.match(name) or len(name) > 63:
        problems.append(f"metadata.name = {name!r}: must be a DNS-1035 label (lowercase letters, digits, '-', "
                        "starting with a letter) of at most 63 characters")
    namespace = metadata.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not DNS_1123.match(namespace) or len(namespace) > 63):
        problems.append(f"metadata.namespace = {namespace!r}: must be a DNS-1123 label")
    return problems + label_problems(metadata)


def rule_problems(manifest: dict, runtimes: set[str]) -> list[str]:
    """The checks the CRD's schema lacks. ``runtimes``: the ClusterTrainingRuntime names that exist."""
    if not isinstance(manifest, dict):
        return ["the manifest is not a mapping"]
    problems = []
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        problems.append(f"apiVersion/kind: expected {API_VERSION} {KIND}")
    if "status" in manifest:
        problems.append("status: set by the controller, not by a manifest")
    problems += _metadata_problems(manifest.get("metadata") or {})
    spec = manifest.get("spec") or {}
    ref = spec.get("runtimeRef") or {}
    if ref.get("apiGroup", GROUP) != GROUP or ref.get("kind", RUNTIME_KIND) != RUNTIME_KIND:
        problems.append(f"spec.runtimeRef: must name a {RUNTIME_KIND} of {GROUP}")
    elif ref.get("name") not in runtimes:
        problems.append(f"spec.runtimeRef.name = {ref.get('name')!r}: no such {RUNTIME_KIND} "
                        f"(known: {', '.join(sorted(runtimes)) or 'none'})")
    trainer = spec.get("trainer")
    if not isinstance(trainer, dict):
        return problems + ["spec.trainer: missing (image, command, nodes)"]
    nodes = trainer.get("numNodes")
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        problems.append(f"spec.trainer.numNodes = {nodes!r}: at least 1 node")
    if not trainer.get("command"):
        problems.append("spec.trainer.command: missing (the runtime's image default does not train)")
    image_problem = _image_problem(trainer.get("image"))
    problems += [image_problem] if image_problem else []
    problems += _resource_problems(trainer)
    problems += _env_problems(trainer.get("env"))
    return problems


def trainjob_problems(manifest: dict, crd_path: str | Path | None = None, runtimes_path: str | Path | None = None) -> list[str]:
    """Every problem found, one per item: the CRD's schema first, then the rules it lacks."""
    return schema_problems(manifest, crd_path) + rule_problems(manifest, shipped_runtimes(runtimes_path))


def check_trainjob(manifest: dict, crd_path: str | Path | None = None, runtimes_path: str | Path | None = None) -> None:
    """Raise TrainJobError naming every problem (on one line); silent for a good manifest."""
    problems = trainjob_problems(manifest, crd_path, runtimes_path)
    if problems:
        raise TrainJobError("TrainJob rejected: " + "; ".join(problems))


# ------------------------------------------------------------------------------------------------
# Moving data: DVC for the input (content-addressed, the project's data versioning), plain copies for the output.


def copy_tree(src: str, dest: str) -> None:
    """Copy every file under ``src`` to the same relative path under ``dest``; either may be a local path or an
    fsspec URL (s3://, gs://, memory://). Used by the job's node 0 and by the KFP hand-off."""
    from fsspec.core import url_to_fs

    src_fs, root = url_to_fs(str(src))
    dest_fs, dest_root = url_to_fs(str(dest))
    files = [path for path in src_fs.find(root) if posixpath.relpath(path, root) != "."]
    if not files:
        raise MissingInput(f"{src}: nothing to copy")
    local = "file" in dest_fs.protocol
    for path in files:
        target = posixpath.join(dest_root, posixpath.relpath(path, root))
        if local:  # object stores have no folders to make
            dest_fs.makedirs(posixpath.dirname(target), exist_ok=True)
        with src_fs.open(path, "rb") as reader, dest_fs.open(target, "wb") as writer:
            shutil.copyfileobj(reader, writer)


def _dvc(args: list[str], cwd: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if result.returncode != 0:
        raise ServiceError(f"dvc {' '.join(args)} failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")


def push_dataset(dataset: str | Path, remote: str) -> str:
    """Push a processed dataset folder to the DVC ``remote``; return its DVC hash (``<md5>.dir``), the value a
    TrainJob pulls by. Same files, same hash: a dataset already pushed with 'dvc push' is not uploaded again."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise MissingInput(f"{dataset}: no processed dataset to hand to the TrainJob")
    with tempfile.TemporaryDirectory(prefix="trainjob-data-") as tmp:
        project = Path(tmp)
        _dvc(["init", "--no-scm", "--quiet"], project)
        _dvc(["remote", "add", "--default", "data", remote], project)
        shutil.copytree(dataset, project / "processed")
        _dvc(["add", "--quiet", "processed"], project)
        _dvc(["push", "--quiet", "processed.dvc"], project)
        return yaml.safe_load((project / "processed.dvc").read_text())["outs"][0]["md5"]


# ------------------------------------------------------------------------------------------------
# The KFP hand-off: create the TrainJob through the Kubernetes API, wait, fetch what node 0 published.


def unique_name(base: str) -> str:
    """``base`` with a random suffix, still a DNS-1035 label of at most 63 characters (one TrainJob per run)."""
    return f"{base[:54].rstrip('-')}-{secrets.token_hex(4)}"


def kube_clients():
    """(CustomObjectsApi, CoreV1Api) with the pod's service account, or ~/.kube/config outside a cluster."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi(), client.CoreV1Api()


def secret_env(core_api, settings) -> dict[str, str]:
    """The launcher's own copy of the credentials (it pushes data and fetches outputs), read from the same
    Secret the TrainJob's pods use; needs RBAC 'get' on that one Secret."""
    secret = core_api.read_namespaced_secret(settings.credentials_secret, settings.namespace)
    data = secret.data or {}
    missing = [key for key in settings.secret_keys if key not in data]
    if missing:
        raise ServiceError(f"Secret {settings.namespace}/{settings.credentials_secret} has no key {', '.join(missing)}")
    env = {key: base64.b64decode(data[key]).decode() for key in settings.secret_keys}
    if settings.s3_endpoint_url:
        env["AWS_ENDPOINT_URL"] = settings.s3_endpoint_url
    return env


def create_trainjob(custom_api, manifest: dict) -> None:
    """Create the TrainJob; the API server's refusal (schema, CEL rules, Trainer's webhook: e.g. a runtime that
    does not exist) becomes a ServiceError carrying its message."""
    import json

    from kubernetes.client.exceptions import ApiException

    metadata = manifest["metadata"]
    try:
        custom_api.create_namespaced_custom_object(GROUP, VERSION, metadata["namespace"], PLURAL, manifest)
    except ApiException as error:
        try:
            message = json.loads(error.body or "{}").get("message", "")
        except ValueError:
            message = str(error.body or "")[:500]
        raise ServiceError(f"the cluster refused TrainJob {metadata['namespace']}/{metadata['name']}: "
                           f"{error.status} {error.reason}: {message}") from None


def wait_for_trainjob(custom_api, name: str, namespace: str, timeout_s: float, poll_s: float = 15.0,
                      clock=time.monotonic, sleep=time.sleep) -> dict:
    """Poll the TrainJob until its Complete or Failed condition is True; return it when Complete. Raises
    ServiceError when it failed, or when ``timeout_s`` passed (then the job is deleted, freeing its nodes)."""
    deadline = clock() + timeout_s
    while True:
        job = custom_api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition.get("status") != "True":
                continue
            if condition.get("type") == "Complete":
                return job
            if condition.get("type") == "Failed":
                raise ServiceError(f"TrainJob {namespace}/{name} failed: {condition.get('reason', '')}: "
                                   f"{condition.get('message', '')} (kubectl logs -n {namespace} -l "
                                   f"jobset.sigs.k8s.io/jobset-name={name})")
        if clock() >= deadline:
            custom_api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            raise ServiceError(f"TrainJob {namespace}/{name} did not finish within {timeout_s / 60:g} minutes: deleted")
        sleep(poll_s)


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def train_on_cluster(params, dataset: Path, model_dir: Path, plots_dir: Path, mlflow_tracking_uri: str = "",
                     custom_api=None, core_api=None, poll_s: float = 15.0) -> dict:
    """Train on a Kubeflow Trainer TrainJob instead of in this process (the KFP train task's hand-off).

    Push ``dataset`` to the DVC remote, create the TrainJob (params 'trainjob', 'train'; a unique name per call),
    wait for it, then copy what its node 0 published into ``model_dir`` (the training directory, as
    'productstudio train --out' writes it) and ``plots_dir`` (the loss curves)."""
    from productstudio.config import section_dict

    settings = params.trainjob
    if custom_api is None:
        custom_api, core_api = kube_clients()
    with _environ(secret_env(core_api, settings)):
        data_md5 = push_dataset(dataset, settings.data_remote)
        name = unique_name(settings.name)
        manifest = render_trainjob(settings, section_dict(params.train), data_md5, name=name,
                                   mlflow_tracking_uri=mlflow_tracking_uri or None)
        # The project's own rules here; the schema, CEL rules and the runtime's existence are the API server's.
        problems = rule_problems(manifest, {settings.runtime})
        if problems:
            raise TrainJobError("TrainJob rejected: " + "; ".join(problems))
        create_trainjob(custom_api, manifest)
        print(f"created TrainJob {settings.namespace}/{name} ({settings.num_nodes} x {settings.proc_per_node} "
              f"processes, data {data_md5}); waiting up to {settings.timeout_minutes} min", flush=True)
        wait_for_trainjob(custom_api, name, settings.namespace, settings.timeout_minutes * 60, poll_s)
        published = f"{settings.output_uri.rstrip('/')}/{name}"
        copy_tree(f"{published}/train", str(model_dir))
        copy_tree(f"{published}/plots", str(plots_dir))
    return {"name": name, "namespace": settings.namespace, "data_md5": data_md5, "published": published}
