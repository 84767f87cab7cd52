"""The CLI's error contract: a UserError is one line and a non-zero exit; anything else is a bug with its traceback."""

from __future__ import annotations

import pytest

from productstudio import cli
from productstudio.errors import BadRequest, DataError, MissingInput, ParamsError, UserError, ValidationFailed
from productstudio.steps import table
from productstudio.steps.step import Step


def _with_command(monkeypatch, run):
    monkeypatch.setattr(table, "COMMANDS", table.COMMANDS + (Step("boom", "fails", "Fails on purpose.", run),))


@pytest.mark.parametrize("error", [MissingInput("data/processed: no manifest.json; run 'productstudio preprocess' first"),
                                   ParamsError("params.yaml: train.lr = -1: must be > 0"),
                                   DataError("train-images-idx3-ubyte.gz: md5 mismatch")])
def test_user_error_is_one_line_and_exit_2(monkeypatch, capsys, error):
    def run():
        raise error

    _with_command(monkeypatch, run)
    assert cli.main(["boom"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"productstudio boom: error: {error}"]


def test_failed_validation_prints_its_summary_and_exits_1(monkeypatch, capsys):
    def run():
        raise ValidationFailed("validation FAILED: 3 of 12 expectations\nreport: reports/validation/report.json")

    _with_command(monkeypatch, run)
    assert cli.main(["boom"]) == 1
    assert capsys.readouterr().err.startswith("validation FAILED: 3 of 12 expectations")


@pytest.mark.parametrize("bug", [KeyError("train"), ValueError("shapes do not match"), FileNotFoundError("x.npy")])
def test_a_bug_keeps_its_traceback(monkeypatch, bug):
    def run():
        raise bug

    _with_command(monkeypatch, run)
    with pytest.raises(type(bug)):
        cli.main(["boom"])


def test_user_errors_keep_their_builtin_kind():
    # Library callers that catch the builtin kinds keep working.
    assert isinstance(MissingInput("x"), FileNotFoundError) and isinstance(ParamsError("x"), ValueError)
    assert BadRequest("unknown category", 404).status == 404 and isinstance(BadRequest("x"), UserError)
