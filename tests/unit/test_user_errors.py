"""The library's user errors: what a user can fix raises a UserError with a one-line message (the CLI prints it
as is); it keeps its builtin kind for callers that catch that. Internal invariants stay plain builtins."""

from __future__ import annotations

import gzip
import inspect

import numpy as np
import pytest

from productstudio import errors
from productstudio.artifacts import write_manifest
from productstudio.config import parse_params
from productstudio.data import fashion_mnist, store
from productstudio.deploy.nginx_proxy import CanaryProxy, render_nginx_conf
from productstudio.errors import DataError, MissingInput, ParamsError, ServiceError, UserError
from productstudio.metrics.kid import kernel_inception_distance
from productstudio.metric_names import parse_metric
from productstudio.serving.tasks.registry import task_class


def test_every_error_class_is_a_user_error():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert UserError in classes and len(classes) > 5
    assert all(issubclass(c, UserError) for c in classes)


def _processed_without_test_split(root):
    write_manifest(root, store.KIND, inputs={}, params={}, splits={"train": {"shards": []}})
    return root


def _bad_idx(path):
    path.write_bytes(gzip.compress(b"not an idx file at all"))
    return path


CASES = {
    "missing processed dir": (lambda tmp: store.load_split(tmp / "processed", "train"), MissingInput, FileNotFoundError,
                              "no manifest.json"),
    "processed dir without the split": (lambda tmp: store.load_split(_processed_without_test_split(tmp), "test"),
                                        DataError, ValueError, "no split 'test' (has train)"),
    "another kind of artifact": (lambda tmp: store.load_split(write_manifest(tmp, "raw-dataset", {}, {}) and tmp, "train"),
                                 DataError, ValueError, "expected a 'processed-dataset' artifact, found 'raw-dataset'"),
    "bad metric name": (lambda tmp: parse_metric("fid500"), ParamsError, ValueError, "unknown metric 'fid500'"),
    "metric of one sample": (lambda tmp: parse_metric("kid1_test"), ParamsError, ValueError, "needs at least 2 samples"),
    "unknown baseline key": (lambda tmp: parse_params({"baseline": {"epochs": 3}}).baseline_train, ParamsError, ValueError,
                             "unknown key baseline.epochs"),
    "canary percent": (lambda tmp: render_nginx_conf("http://127.0.0.1:1", "127.0.0.1:2", 150, 8090, tmp), ParamsError,
                       ValueError, "canary percent 150 is outside 0..100"),
    "no proxy running": (lambda tmp: CanaryProxy(tmp).set_percent(0), ServiceError, RuntimeError, "no canary proxy runs"),
    "unknown serving task": (lambda tmp: task_class("paint"), ParamsError, ValueError, "unknown serving task 'paint'"),
    "not an IDX file": (lambda tmp: fashion_mnist.read_idx(_bad_idx(tmp / "x-idx3-ubyte.gz")), DataError, ValueError,
                        "not an IDX file"),
}


@pytest.mark.parametrize("case", CASES)
def test_user_mistakes_raise_one_line_user_errors(case, tmp_path):
    call, kind, builtin, phrase = CASES[case]
    with pytest.raises(UserError) as caught:
        call(tmp_path)
    error = caught.value
    assert type(error) is kind and isinstance(error, builtin)
    assert phrase in str(error)
    line = error.one_line("productstudio step")
    assert line == f"productstudio step: error: {error}" and "\n" not in line


def test_internal_invariants_stay_builtins():
    with pytest.raises(ValueError) as caught:  # a caller's bug, not the user's: keeps its traceback in the CLI
        kernel_inception_distance(np.zeros((4, 8)), np.zeros((4, 9)))
    assert not isinstance(caught.value, UserError)
