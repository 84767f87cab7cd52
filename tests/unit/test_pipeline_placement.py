"""What the compiled Kubeflow package asks of a cluster: every task's CPU and memory requests and limits, retries
only where a rerun is harmless, caching except where a step must rerun, and GPUs only when compiled with --gpu."""

from __future__ import annotations

import yaml

from pipelines import studio
from pipelines.product_studio import GPU_TASKS, PACKAGE_PATH, RESOURCES, RETRIED, UNCACHED, compile_pipeline


def tasks_and_executors(path):
    package = yaml.safe_load(path.read_text())
    tasks = package["root"]["dag"]["tasks"]
    executors = package["deploymentSpec"]["executors"]
    named = {}
    for key, task in tasks.items():
        name = task["taskInfo"]["name"]
        executor = executors[task["componentRef"]["name"].replace("comp-", "exec-", 1)]
        if "container" in executor:  # importers run no container
            named[name] = (task, executor["container"])
    return named


def test_every_task_has_requests_limits_retries_and_caching_as_tabled():
    named = tasks_and_executors(PACKAGE_PATH)  # the committed package (test_kfp_pipeline checks it is current)
    assert set(named) == set(RESOURCES)
    for name, (task, container) in named.items():
        cpu_request, cpu_limit, memory_request, memory_limit = RESOURCES[name]
        resources = container["resources"]
        assert (resources["resourceCpuRequest"], resources["resourceCpuLimit"]) == (cpu_request, cpu_limit), name
        assert (resources["resourceMemoryRequest"], resources["resourceMemoryLimit"]) == (memory_request,
                                                                                         memory_limit), name
        assert "accelerator" not in resources, name  # no GPU unless asked
        assert ("retryPolicy" in task) == (name in RETRIED), name
        assert task.get("cachingOptions", {}).get("enableCache", False) == (name not in UNCACHED), name
    assert "validate" not in RETRIED and "register" not in RETRIED and "promote" not in RETRIED
    assert named["train"][0]["retryPolicy"]["maxRetryCount"] == 2


def test_gpu_package_gives_one_gpu_to_the_torch_steps_only(tmp_path):
    named = tasks_and_executors(compile_pipeline(tmp_path / "gpu.yaml", gpu=True))
    for name, (_, container) in named.items():
        accelerator = container["resources"].get("accelerator")
        if name in GPU_TASKS:
            assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1", name
        else:
            assert accelerator is None, name


def test_studio_package_places_its_tasks_too():
    named = tasks_and_executors(studio.PACKAGE_PATH)
    assert set(named) == set(studio.RESOURCES) == {"edit-studio", "edit-evalset", "edit-evaluate"}
    for name, (task, container) in named.items():
        assert container["resources"]["resourceMemoryLimit"] == studio.RESOURCES[name][3], name
        assert "retryPolicy" in task, name
        assert task.get("cachingOptions", {}).get("enableCache", False) == (name != "edit-studio"), name


def test_editors_package_places_its_tasks_too():
    from pipelines import editors

    named = tasks_and_executors(editors.PACKAGE_PATH)  # test_kfp_editors checks it is current
    assert set(named) == set(editors.RESOURCES) == {"edit-restore-train", "edit-detect-train",
                                                    "edit-watermark-detect-train", "edit-restore-eval", "edit-register"}
    for name, (task, container) in named.items():
        assert container["resources"]["resourceMemoryLimit"] == editors.RESOURCES[name][3], name
        assert ("retryPolicy" in task) == (name != "edit-register"), name  # the registry is acted on once
        assert task.get("cachingOptions", {}).get("enableCache", False) == (name != "edit-register"), name
