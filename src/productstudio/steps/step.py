"""What a step is to its doors: a name, help, the params sections it reads, its flags, ``run`` and ``format``.

The CLI is built from these (``productstudio.cli``), the DVC stages are checked against them
(tests/unit/test_steps_table.py) and the KFP components call the same ``run``. ``run`` takes the parsed
params (or None when the step reads none) and one keyword per flag, does the work through the library and
returns a report; ``format`` turns the report into the lines a person reads; ``exit_code`` maps a report to
the process's exit status (0 unless a step says otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Arg:
    """One command-line flag (or positional argument when ``flag`` has no leading dash)."""

    flag: str
    help: str
    default: Any = None
    type: Callable | None = Path
    action: str | None = None  # "store_true"
    choices: Sequence[str] | None = None
    keyword: str | None = None  # the run() keyword, when the flag's own name cannot be one (--in)

    @property
    def dest(self) -> str:
        return self.keyword or self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser) -> None:
        help_text = self.help
        if self.default is not None and self.action is None:
            help_text += " (default: %(default)s)"
        options: dict[str, Any] = {"help": help_text.replace("%", "%%").replace("%%(default)s", "%(default)s")}
        if self.keyword and self.flag.startswith("-"):
            options["dest"] = self.keyword
        if self.action:
            options["action"] = self.action
        else:
            options.update(default=self.default, type=self.type)
            if self.choices:
                options["choices"] = list(self.choices)
        parser.add_argument(self.flag, **options)


DEVICE = Arg("--device", "auto (CUDA when present), cpu or cuda[:N]", "auto", str)
NO_MLFLOW = Arg("--no-mlflow", "do not log to MLflow", action="store_true")


def _no_text(report: Any) -> str:
    return ""


def _zero(report: Any) -> int:
    return 0


@dataclass(frozen=True)
class Step:
    name: str
    help: str
    description: str
    run: Callable[..., Any]
    format: Callable[[Any], str] = _no_text
    params: tuple[str, ...] = ()  # params.yaml sections (or section.key) the step reads; () = no --params flag
    args: tuple[Arg, ...] = field(default_factory=tuple)
    exit_code: Callable[[Any], int] = _zero

    def call(self, values: dict[str, Any]) -> Any:
        """Run with parsed flag values (``params`` is the params file path when the step reads params)."""
        kwargs = {arg.dest: values[arg.dest] for arg in self.args}
        if self.params:
            from productstudio.config import load_params

            return self.run(load_params(values["params"]), **kwargs)
        return self.run(**kwargs)
