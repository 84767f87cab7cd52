"""KServe InferenceService manifests: valid against the CRD's schema, plus what the CRD does not check."""

from __future__ import annotations

import copy
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from productstudio.config import load_params
from productstudio.deploy import kserve
from productstudio.deploy.kserve import EXAMPLE_CANARY, EXAMPLE_PERCENT, EXAMPLE_STABLE, ManifestError
from tests.conftest import REPO_ROOT

CRD = REPO_ROOT.parent / "shared" / "schemas" / "kserve" / "serving.kserve.io_inferenceservices.yaml"


@pytest.fixture(scope="module")
def crd():
    if not CRD.is_file():  # CI has ../shared beside the repository: absence is a broken checkout, not a skip
        pytest.fail(f"{CRD} is missing: the KServe tests validate against the CRD in ../shared/schemas")
    return CRD


@pytest.fixture(scope="module")
def options():
    return kserve.options_from_settings(load_params(REPO_ROOT / "params.yaml").deploy)


def stable_manifest(options):
    return kserve.render_inference_service(EXAMPLE_STABLE, options)


def canary_manifest(options, percent=EXAMPLE_PERCENT):
    return kserve.render_inference_service(EXAMPLE_CANARY, options, canary_percent=percent, stable=EXAMPLE_STABLE)


def test_rendered_manifests_are_valid(crd, options):
    for manifest in (stable_manifest(options), canary_manifest(options), canary_manifest(options, 0),
                     canary_manifest(options, 100)):
        assert kserve.manifest_problems(manifest, crd) == []


def test_manifest_carries_the_registry_version(options):
    stable, canary = stable_manifest(options), canary_manifest(options)
    assert stable["apiVersion"] == "serving.kserve.io/v1beta1" and stable["kind"] == "InferenceService"
    # One InferenceService: the canary is the same object re-applied with the challenger's storage.
    assert stable["metadata"]["name"] == canary["metadata"]["name"] == "product-studio-generator"
    predictor = canary["spec"]["predictor"]
    assert predictor["pytorch"]["storageUri"] == f"{options.storage_prefix}/product-studio-generator/4"
    assert predictor["canaryTrafficPercent"] == EXAMPLE_PERCENT
    assert "canaryTrafficPercent" not in stable["spec"]["predictor"]
    notes = canary["metadata"]["annotations"]
    assert notes["productstudio/git-commit"] == EXAMPLE_CANARY.tags["git.commit"]
    assert notes["productstudio/data-version"] == EXAMPLE_CANARY.tags["data.version"]
    assert notes["productstudio/stable-model-version"] == "3"
    assert notes["serving.kserve.io/deploymentMode"] == "Knative"  # KServe 0.17+ name; the default has no split
    assert canary["metadata"]["labels"]["productstudio/model-version"] == "4"
    container = predictor["pytorch"]
    assert container["resources"]["limits"] == {"cpu": options.cpu_limit, "memory": options.memory_limit}
    assert container["securityContext"]["privileged"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["runAsNonRoot"] is True


def test_committed_examples_are_what_the_renderer_writes(crd, options, tmp_path):
    # deploy/kserve/ holds 'productstudio deploy kserve --example --canary-alias challenger' output.
    written = kserve.write_manifests(tmp_path, EXAMPLE_STABLE, options, EXAMPLE_CANARY, EXAMPLE_PERCENT, crd)
    assert [p.name for p in written] == ["product-studio-generator-stable.yaml", "product-studio-generator-canary.yaml"]
    for path in written:
        committed = REPO_ROOT / "deploy" / "kserve" / path.name
        assert committed.is_file(), f"{committed} is missing"
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run 'productstudio deploy kserve --example --canary-alias challenger'")
        assert kserve.manifest_problems(yaml.safe_load(committed.read_text()), crd) == []


def _set(manifest, path, value):
    *parents, last = path
    node = manifest
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()
P = ("spec", "predictor")
C = (*P, "pytorch")


@pytest.mark.parametrize("path, value, expected", [
    ((*P, "canaryTrafficPercent"), 150, "spec.predictor.canaryTrafficPercent = 150: must be an integer in 0..100"),
    ((*P, "canaryTrafficPercent"), -1, "canaryTrafficPercent = -1: must be an integer in 0..100"),
    ((*P, "canaryTrafficPercent"), "10", "spec.predictor.canaryTrafficPercent: '10' is not of type 'integer'"),
    ((*C, "storageURI"), "s3://x", "spec.predictor.pytorch.storageURI: unknown field (did you mean 'storageUri'?)"),
    ((*P, "canaryTraficPercent"), 10, "spec.predictor.canaryTraficPercent: unknown field (did you mean 'canaryTrafficPercent'?)"),
    ((*C, "resources", "limit"), {"cpu": "1"}, "spec.predictor.pytorch.resources.limit: unknown field (did you mean 'limits'?)"),
    ((*P, "minReplicas"), "one", "spec.predictor.minReplicas: 'one' is not of type 'integer'"),
    ((*C, "resources", "limits", "memory"), "4 gigs", "spec.predictor.pytorch.resources.limits.memory: '4 gigs' does not match"),
    ((*C, "resources", "limits"), _DELETE, "spec.predictor.pytorch.resources.limits.cpu: missing"),
    ((*C, "securityContext", "privileged"), True, "spec.predictor.pytorch.securityContext.privileged: must be false"),
    ((*C, "securityContext", "allowPrivilegeEscalation"), _DELETE, "allowPrivilegeEscalation: must be false"),
    ((*P, "hostNetwork"), True, "spec.predictor.hostNetwork: must not be set"),
    (("metadata", "name"), "Product_Studio", "metadata.name = 'Product_Studio': must be a lowercase DNS-1035 label"),
    (("metadata", "labels", "productstudio/data-version"), "a" * 64, "label values are strings of at most 63"),
    (("metadata", "labels", "productstudio/model-version"), 3, "metadata.labels.productstudio/model-version = 3"),
    (("metadata", "uid"), "x", "metadata.uid: unknown or not settable field"),
    (("spec", "predicter"), {}, "spec.predicter: unknown field"),
    (("apiVersion",), "serving.kubeflow.org/v1alpha2", "apiVersion/kind: expected serving.kserve.io/v1beta1 InferenceService"),
])
def test_bad_manifests_are_rejected_with_a_clear_message(crd, options, path, value, expected):
    manifest = copy.deepcopy(canary_manifest(options))
    _set(manifest, path, value)
    with pytest.raises(ManifestError) as error:
        kserve.check_manifest(manifest, crd)
    assert expected in str(error.value)


def test_unknown_fields_are_found_inside_lists_and_maps(crd):
    schema = kserve.load_schema(crd)
    manifest = {"spec": {"predictor": {
        "containers": [{"name": "kserve-container", "image": "x", "imagePullPolicy": "IfNotPresent", "envv": []}],
        "pytorch": {"resources": {"limits": {"nvidia.com/gpu": 1}}},  # a map: any resource name is allowed
    }}}
    assert kserve.unknown_fields(manifest, schema) == ["spec.predictor.containers.0.envv: unknown field (did you mean 'env'?)"]


def test_render_refuses_a_bad_percent(options):
    for percent in (150, -5, 12.5):
        with pytest.raises(ManifestError, match="must be an integer in 0..100"):
            canary_manifest(options, percent)


def test_from_registry_resolves_an_alias_to_its_version_and_tags():
    version = SimpleNamespace(name="product-studio-generator", version="7", run_id="r", aliases=["champion"],
                              tags={"data.version": "a" * 64, "git.commit": "b" * 40, "metrics.fid1k_test": "80.0"})

    class Registry:  # the part of MlflowClient that resolve() uses
        def search_model_versions(self, query):
            return [version]

        def get_model_version_by_alias(self, name, alias):
            assert (name, alias) == ("product-studio-generator", "champion")
            return version

    model = kserve.from_registry("models:/product-studio-generator@champion", Registry())
    assert (model.name, model.version, model.alias) == ("product-studio-generator", "7", "champion")
    manifest = kserve.render_inference_service(model)
    notes = manifest["metadata"]["annotations"]
    assert notes["productstudio/git-commit"] == "b" * 40 and "productstudio/metrics-fid1k_test" not in notes
    assert manifest["spec"]["predictor"]["pytorch"]["storageUri"].endswith("/product-studio-generator/7")


def test_cli_help_explains_deploy_kserve():
    result = subprocess.run([sys.executable, "-m", "productstudio.cli", "deploy", "kserve", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0
    for words in ("canaryTrafficPercent", "storageUri", "--canary-alias", "params.yaml", "token authorization"):
        assert words in " ".join(result.stdout.split()), words


def test_cli_refuses_a_bad_percent_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "productstudio.cli", "deploy", "kserve", "--canary-alias", "challenger",
                             "--percent", "150", "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 2
    assert result.stderr.strip() == "productstudio deploy: error: --percent 150: the canary share must be in 0..100"
