"""KServe InferenceService manifests for the generator, rendered from a registry version.

The predictor is KServe's ``pytorch`` one, which runs TorchServe on the archive that ``productstudio
package`` builds. Its ``storageUri`` is where that archive is published, in the layout KServe's TorchServe
runtime reads::

    <storage_prefix>/<model name>/<version>/config/config.properties
    <storage_prefix>/<model name>/<version>/model-store/<model name>.mar

A canary is KServe's own rollout: the *same* InferenceService, re-applied with the challenger's
``storageUri`` and ``canaryTrafficPercent: P``; KServe keeps the last fully rolled-out revision (the
champion) for the other 100 - P %. Promotion is re-applying the canary manifest without the percent (or 100);
rollback is re-applying the stable one. Canary rollouts need KServe's Knative mode (called ``Serverless``
before KServe 0.17, whose default became ``Standard``, the former RawDeployment, which has no traffic
split), so the manifests ask for it in ``serving.kserve.io/deploymentMode``.

Security: the container runs as a non-root uid with no privilege escalation, every capability dropped and
the runtime's seccomp profile; CPU and memory have requests and limits; the pod gets no service-account token.
TorchServe's own token authorization cannot be the cluster's authentication (its keys are generated per pod
at start-up and expire), so the config.properties published for KServe turns it off and keeps the model API
off, and authentication belongs to the mesh (see deploy/kserve/README.md).

``check_manifest`` validates a manifest against the CRD's ``openAPIV3Schema`` (with ``jsonschema``) and adds
what the CRD does not enforce: unknown fields, ``canaryTrafficPercent`` within 0..100, metadata syntax, and
the security settings above.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml
from productstudio.errors import DataError, MissingInput, UserError

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
# KServe >= 0.17 name of the mode with revisions and traffic splitting (before 0.17: "Serverless").
DEPLOYMENT_MODE = "Knative"
# What the registry knows about a version and the manifest carries as annotations (lineage).
LINEAGE_TAGS = ("data.version", "git.commit", "params.hash", "model.sha256", "model.kind", "variants")
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
HEADER = """\
# Rendered by 'productstudio deploy kserve' for {source} (MLflow Model Registry); do not edit by hand.
# KServe {what}. Apply with: kubectl apply -f {file}
"""


class ManifestError(UserError, ValueError):
    """A manifest KServe would reject (or that breaks the project's rules); one problem per line."""


@dataclass(frozen=True)
class ModelVersion:
    """A registry model version as the manifests need it."""

    name: str
    version: str
    alias: str | None = None
    tags: dict = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class KServeOptions:
    storage_prefix: str = "s3://product-studio-models"
    namespace: str = "product-studio"
    service_name: str | None = None  # None: the registered model name
    service_account: str | None = "product-studio-models"  # holds the storage credentials (KServe's S3 secret)
    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "2Gi"
    memory_limit: str = "4Gi"
    min_replicas: int = 1
    max_replicas: int = 3
    run_as_user: int = 1000  # the TorchServe image's non-root user; numeric so runAsNonRoot can be verified


def options_from_settings(deploy) -> KServeOptions:
    """params.yaml 'deploy' (DeploySettings) -> KServeOptions."""
    return KServeOptions(
        storage_prefix=deploy.kserve_storage_prefix, namespace=deploy.kserve_namespace,
        service_name=deploy.kserve_service_name, service_account=deploy.kserve_service_account,
        cpu_request=deploy.kserve_cpu_request, cpu_limit=deploy.kserve_cpu_limit,
        memory_request=deploy.kserve_memory_request, memory_limit=deploy.kserve_memory_limit,
        min_replicas=deploy.kserve_min_replicas, max_replicas=deploy.kserve_max_replicas)


# The fixed inputs of the committed examples in deploy/kserve/ ('productstudio deploy kserve --example');
# a test renders them again and compares, so the examples cannot drift from the renderer.
EXAMPLE_STABLE = ModelVersion("product-studio-generator", "3", "champion", {
    "data.version": "a" * 64, "git.commit": "b" * 40, "params.hash": "c" * 64, "model.sha256": "d" * 64,
    "model.kind": "gan", "variants": "fp32,int8"})
EXAMPLE_CANARY = ModelVersion("product-studio-generator", "4", "challenger", {
    "data.version": "a" * 64, "git.commit": "e" * 40, "params.hash": "c" * 64, "model.sha256": "f" * 64,
    "model.kind": "gan", "variants": "fp32,int8"})
EXAMPLE_PERCENT = 10


def from_registry(uri: str, mlflow_client=None) -> ModelVersion:
    """``models:/<name>@<alias>`` (or ``/<version>``) -> its version and tags, asked of the registry."""
    from productstudio.registry.model_registry import MODEL_URI, resolve

    mv = resolve(uri, mlflow_client)
    return ModelVersion(mv.name, str(mv.version), MODEL_URI.match(uri)["alias"], dict(mv.tags))


def storage_uri(prefix: str, model: ModelVersion) -> str:
    return f"{prefix.rstrip('/')}/{model.name}/{model.version}"


def service_name(model: ModelVersion, options: KServeOptions) -> str:
    name = options.service_name or model.name.lower().replace("_", "-").replace(".", "-")
    if not DNS_1035.match(name) or len(name) > 63:
        raise ManifestError(f"{name!r} is not a valid InferenceService name (lowercase DNS-1035 label, at most 63 "
                            "characters): set deploy.kserve_service_name")
    return name


def _metadata(model: ModelVersion, role: str) -> tuple[dict, dict]:
    labels = {"app.kubernetes.io/name": "product-studio", "app.kubernetes.io/component": "generator",
              "app.kubernetes.io/managed-by": "productstudio", "productstudio/model-version": model.version,
              "productstudio/role": role}
    if model.alias:
        labels["productstudio/alias"] = model.alias
    annotations = {"productstudio/registered-model": model.name, "productstudio/model-version": model.version,
                   "productstudio/registry-uri": f"models:/{model.name}/{model.version}"}
    annotations.update({f"productstudio/{tag.replace('.', '-')}": str(model.tags[tag])
                        for tag in LINEAGE_TAGS if tag in model.tags})
    return labels, annotations


def render_inference_service(model: ModelVersion, options: KServeOptions = KServeOptions(),
                             canary_percent: int | None = None, stable: ModelVersion | None = None) -> dict:
    """The InferenceService serving ``model``. With ``canary_percent`` it is the canary step of a rollout:
    ``model`` (the challenger) gets that share and KServe keeps ``stable`` (the champion) for the rest."""
    if canary_percent is not None and not (isinstance(canary_percent, int) and 0 <= canary_percent <= 100):
        raise ManifestError(f"canaryTrafficPercent must be an integer in 0..100, not {canary_percent!r}")
    role = "canary" if canary_percent is not None else "stable"
    labels, annotations = _metadata(model, role)
    annotations["serving.kserve.io/deploymentMode"] = DEPLOYMENT_MODE  # canary rollouts need Knative revisions
    if stable is not None:
        annotations["productstudio/stable-model-version"] = stable.version
        annotations["productstudio/stable-storage-uri"] = storage_uri(options.storage_prefix, stable)
    predictor: dict = {
        "minReplicas": options.min_replicas,
        "maxReplicas": options.max_replicas,
        "labels": {"productstudio/model-version": model.version, "productstudio/role": role},
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "pytorch": {
            "protocolVersion": "v1",  # TorchServe's REST API (/v1/models/<name>:predict)
            "storageUri": storage_uri(options.storage_prefix, model),
            "resources": {"requests": {"cpu": options.cpu_request, "memory": options.memory_request},
                          "limits": {"cpu": options.cpu_limit, "memory": options.memory_limit}},
            "securityContext": {"privileged": False, "allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                "runAsUser": options.run_as_user, "capabilities": {"drop": ["ALL"]}},
        },
    }
    if options.service_account:
        predictor["serviceAccountName"] = options.service_account
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = canary_percent
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": service_name(model, options), "namespace": options.namespace, "labels": labels,
                     "annotations": annotations},
        "spec": {"predictor": predictor},
    }


def to_yaml(manifest: dict, source: str, what: str, file: str) -> str:
    body = yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)
    return HEADER.format(source=source, what=what, file=file) + body


def write_manifests(out_dir: str | Path, stable: ModelVersion, options: KServeOptions = KServeOptions(),
                    canary: ModelVersion | None = None, percent: int | None = None,
                    crd_path: str | Path | None = None) -> list[Path]:
    """``OUT/<service>-stable.yaml`` and, with a canary, ``OUT/<service>-canary.yaml``; returns the paths.
    Each manifest is checked (``check_manifest``) before it is written."""
    if canary is not None and percent is None:
        raise ManifestError("a canary needs a traffic percent (--percent)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = service_name(stable, options)
    written = []
    manifest = render_inference_service(stable, options)
    check_manifest(manifest, crd_path)
    path = out_dir / f"{name}-stable.yaml"
    path.write_text(to_yaml(manifest, stable.uri, f"InferenceService for version {stable.version}: 100 % of traffic",
                            path.name))
    written.append(path)
    if canary is not None:
        manifest = render_inference_service(canary, options, canary_percent=percent, stable=stable)
        check_manifest(manifest, crd_path)
        path = out_dir / f"{name}-canary.yaml"
        what = (f"canary step: version {canary.version} gets {percent} % of traffic, the last rolled-out revision "
                f"(version {stable.version}, {path.name.replace('-canary', '-stable')}) the rest")
        path.write_text(to_yaml(manifest, canary.uri, what, path.name))
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------------
# Validation: the CRD's schema, plus what it leaves to KServe's webhook or to us.


def default_crd_path() -> Path:
    """../shared/schemas/kserve/ beside the repository (where CI has it)."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "schemas" / "kserve" / "serving.kserve.io_inferenceservices.yaml"


@lru_cache(maxsize=2)
def load_schema(crd_path: str | Path | None = None) -> dict:
    """The v1beta1 ``openAPIV3Schema`` of the InferenceService CRD (a 2 MB YAML: parsed once)."""
    path = Path(crd_path) if crd_path else default_crd_path()
    if not path.is_file():
        raise MissingInput(f"{path}: the KServe InferenceService CRD is missing")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 (a safe loader)
    for version in crd["spec"]["versions"]:
        if version["name"] == "v1beta1":
            return version["schema"]["openAPIV3Schema"]
    raise DataError(f"{path}: no v1beta1 version in the CRD")


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(root)"


def unknown_fields(value, schema: dict, path: tuple = ()) -> list[str]:
    """Keys the schema does not declare (the CRD accepts them silently; the API server would prune them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    problems = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                problems += unknown_fields(item, properties[key], (*path, key))
            elif isinstance(extra, dict):
                problems += unknown_fields(item, extra, (*path, key))
            elif properties is not None:
                # A wrong case first (storageURI), then a near spelling (canaryTraficPercent).
                near = [k for k in properties if k.lower() == str(key).lower()]
                near = near or difflib.get_close_matches(str(key), properties, n=1, cutoff=0.8)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                problems.append(f"{_where((*path, key))}: unknown field{hint}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problems += unknown_fields(item, schema["items"], (*path, i))
    return problems


def _metadata_problems(metadata: dict) -> list[str]:
    problems = []
    allowed = {"name", "namespace", "labels", "annotations"}
    problems += [f"metadata.{key}: unknown or not settable field" for key in metadata if key not in allowed]
    name = metadata.get("name")
    if not isinstance(name, str) or not DNS_1035.match(name) or len(name) > 63:
        problems.append(f"metadata.name = {name!r}: must be a lowercase DNS-1035 label of at most 63 characters")
    return problems + label_problems(metadata)


def label_problems(metadata: dict) -> list[str]:
    """What the API server refuses in any object's labels and annotations (the CRD schemas leave them open)."""
    problems = []
    for key, value in (metadata.get("labels") or {}).items():
        if not QUALIFIED_KEY.match(str(key)):
            problems.append(f"metadata.labels.{key}: not a valid label key")
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            problems.append(f"metadata.labels.{key} = {value!r}: label values are strings of at most 63 "
                            "alphanumerics, '-', '_' or '.'")
    for key, value in (metadata.get("annotations") or {}).items():
        if not isinstance(value, str):
            problems.append(f"metadata.annotations.{key} = {value!r}: annotation values must be strings")
    return problems


def _policy_problems(spec: dict) -> list[str]:
    """What KServe's webhook checks (traffic percent) and the project's own rules (security, resources)."""
    problems = []
    for component in ("predictor", "transformer", "explainer"):
        percent = (spec.get(component) or {}).get("canaryTrafficPercent")
        if percent is not None and not (isinstance(percent, int) and not isinstance(percent, bool) and 0 <= percent <= 100):
            problems.append(f"spec.{component}.canaryTrafficPercent = {percent!r}: must be an integer in 0..100")
    predictor = spec.get("predictor") or {}
    container = predictor.get("pytorch")
    if not isinstance(container, dict):
        return problems + ["spec.predictor.pytorch: missing (the generator is served by KServe's TorchServe runtime)"]
    if not container.get("storageUri"):
        problems.append("spec.predictor.pytorch.storageUri: missing")
    limits = (container.get("resources") or {}).get("limits") or {}
    problems += [f"spec.predictor.pytorch.resources.limits.{key}: missing" for key in ("cpu", "memory") if key not in limits]
    security = container.get("securityContext") or {}
    if security.get("privileged", False) is not False:
        problems.append("spec.predictor.pytorch.securityContext.privileged: must be false")
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append("spec.predictor.pytorch.securityContext.allowPrivilegeEscalation: must be false")
    if security.get("runAsNonRoot") is not True and (predictor.get("securityContext") or {}).get("runAsNonRoot") is not True:
        problems.append("spec.predictor.pytorch.securityContext.runAsNonRoot: must be true")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if predictor.get(flag):
            problems.append(f"spec.predictor.{flag}: must not be set")
    return problems


def manifest_problems(manifest: dict, crd_path: str | Path | None = None) -> list[str]:
    """Every problem found, one line each: schema errors first, then unknown fields, metadata and policy."""
    import jsonschema

    schema = load_schema(crd_path)
    validator = jsonschema.Draft7Validator(schema)
    problems = [f"{_where(error.absolute_path)}: {error.message}"
                for error in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))]
    if not isinstance(manifest, dict):
        return problems or ["the manifest is not a mapping"]
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        problems.append(f"apiVersion/kind: expected {API_VERSION} {KIND}")
    problems += unknown_fields(manifest, schema)
    problems += _metadata_problems(manifest.get("metadata") or {})
    problems += _policy_problems(manifest.get("spec") or {})
    return problems


def check_manifest(manifest: dict, crd_path: str | Path | None = None) -> None:
    """Raise ManifestError listing every problem; silent for a good manifest."""
    problems = manifest_problems(manifest, crd_path)
    if problems:
        raise ManifestError("InferenceService rejected:\n  " + "\n  ".join(problems))
