"""The doors agree with the table of steps: every command's --help, dvc.yaml's stages, components/."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from productstudio.config import Params
from productstudio.steps import table
from tests.conftest import REPO_ROOT

SRC = REPO_ROOT / "src"
# Door plumbing every stage runs through; the CLI imports every step, so counting it would make each stage
# depend on all the others.
DOORS = {"productstudio.cli", "productstudio.steps.table", "productstudio.steps.step"}


def _all_commands():
    for step in table.PIPELINE + table.COMMANDS:
        yield [step.name], step
    for group, (_, _, targets) in table.GROUPS.items():
        for step in targets:
            yield [group, step.name], step


@pytest.mark.parametrize("words,step", list(_all_commands()), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_every_command_explains_itself(words, step):
    from productstudio.cli import build_parser

    parser = build_parser()
    sub = parser
    for word in words:  # walk down to the command's own parser
        sub = next(a for a in sub._actions if a.dest in ("step", "target")).choices[word]
    text = sub.format_help()
    assert " ".join(step.description.split()[:6]) in " ".join(text.split())
    for arg in step.args:  # a positional shows its choices
        assert (arg.flag if arg.flag.startswith("-") else "{" + ",".join(arg.choices) + "}") in text
    if step.params:
        assert "--params" in text


def test_help_runs_as_a_process_for_every_command():
    # One subprocess for all: --help must not need a params.yaml, services or torch at import.
    code = ("import contextlib, io, sys\nfrom productstudio.cli import main\nfrom productstudio.steps import table\n"
            "for words in sys.argv[1:]:\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        try:\n            main(words.split() + ['--help'])\n"
            "        except SystemExit as done:\n            assert done.code == 0, words\n"
            "    assert 'usage: productstudio' in out.getvalue(), words\n"
            "print('torch' in sys.modules)\n")
    commands = [" ".join(words) for words, _ in _all_commands()] + ["deploy"]
    result = subprocess.run([sys.executable, "-c", code, *commands], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", "building the CLI imported torch"


def _module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(module: str) -> set[str]:
    """Every productstudio module ``module`` imports, directly or through others, lazy imports included."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names if alias.name.startswith("productstudio")]
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("productstudio"):
                todo.append(node.module)
                todo += [f"{node.module}.{alias.name}" for alias in node.names]  # `from pkg import module`
    # Sub-packages' __init__.py files are docstrings only (tests/unit/test_layers.py); the top one has __version__.
    return {name for name in seen if name not in DOORS
            and not (_module_file(name).name == "__init__.py" and name != "productstudio")}


def _stages():
    return yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def _stage_step(stage: dict):
    words = stage["cmd"].split()
    assert words[0] == "productstudio", stage["cmd"]
    return table.by_words(words[1:])


def test_every_pipeline_step_is_a_dvc_stage_and_every_stage_a_step():
    stepped = {_stage_step(stage).run.__module__ for stage in _stages().values()}
    assert stepped == {step.run.__module__ for step in table.PIPELINE + table.EDIT_PIPELINE}


@pytest.mark.parametrize("stage_name", sorted(_stages()))
def test_dvc_stage_lists_the_code_its_step_runs(stage_name):
    stage = _stages()[stage_name]
    step = _stage_step(stage)
    deps = [d for d in stage.get("deps", []) if d.startswith("src/")]
    missing = []
    for module in sorted(imported_modules(step.run.__module__)):
        path = _module_file(module).relative_to(REPO_ROOT).as_posix()
        if not any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps):
            missing.append(path)
    assert not missing, f"dvc.yaml stage {stage_name} runs code it does not list in deps: {missing}"


@pytest.mark.parametrize("stage_name", sorted(_stages()))
def test_dvc_stage_lists_the_params_its_step_reads(stage_name):
    stage = _stages()[stage_name]
    step = _stage_step(stage)
    declared = stage.get("params", [])
    assert "--params params.yaml" in stage["cmd"]
    # What the step says it reads, and every section its module picks out of the params (`params.<section>`) to
    # hand to the library; library functions given the whole params (register, promote) are declared by the step.
    sections = {field.alias or name for name, field in Params.model_fields.items()}
    source = _module_file(step.run.__module__).read_text()
    read = set(step.params) | {m for m in re.findall(r"\bparams\.(\w+)", source) if m in sections}
    for entry in read:
        section = entry.split(".")[0]
        if entry in declared or section in declared:
            continue
        # `params.<section>` in code where the step names the keys of that section it reads (e.g. evaluate.seed)
        narrowed = [key for key in step.params if key.startswith(section + ".")]
        covered = entry == section and narrowed and all(key in declared for key in narrowed)
        assert covered, f"dvc.yaml stage {stage_name} reads params '{entry}' without declaring it"


def test_every_pipeline_step_has_a_component_that_calls_it():
    for step in table.PIPELINE + table.EDIT_PIPELINE:
        module = step.run.__module__.rsplit(".", 1)[1]
        source = (REPO_ROOT / "components" / f"{module}.py").read_text()
        assert f"from productstudio.steps import {module} as step" in source and "step.run(" in source, module


def test_readme_step_table_names_every_command():
    readme = (REPO_ROOT / "README.md").read_text()
    table_rows = readme[readme.index("## The steps"):readme.index("### Your own product photos")]
    for step in table.PIPELINE + table.COMMANDS:
        assert f"`productstudio {step.name}" in table_rows, step.name
    for group, (_, _, targets) in table.GROUPS.items():
        rows = " ".join(line for line in table_rows.splitlines() if f"`productstudio {group} " in line)
        assert all(target.name in rows for target in targets), group
