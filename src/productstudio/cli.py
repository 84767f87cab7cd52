"""The command-line door: ``productstudio <step> --help``. Built from the table of steps; parses flags, calls
the step, prints its report. A ``UserError`` (or a full disk, or an MLflow server that does not answer) is printed as one
line; anything else is a bug and shows its traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from productstudio import __version__, paths, tracking
from productstudio.artifacts import is_disk_full
from productstudio.errors import DiskFull, UserError
from productstudio.steps import table
from productstudio.steps.step import Step

EPILOG = """The steps read their settings from params.yaml (one section per step) and write artifact
directories with a manifest.json. Usually they run through DVC: 'dvc repro' runs the pipeline
(ingest -> validate -> preprocess -> train, train-classifier, real-stats -> evaluate -> quantize ->
register -> promote) and skips what is up to date."""


def _add_step(commands, step: Step) -> None:
    parser = commands.add_parser(step.name, help=step.help.replace("%", "%%"), description=step.description)
    if step.params:
        parser.add_argument("--params", default=paths.PARAMS, type=Path, help="params file (default: %(default)s)")
    for arg in step.args:
        arg.add_to(parser)
    parser.set_defaults(step_spec=step)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="productstudio",
        description="Product Studio: learn from a catalogue's product photos, generate and edit images, measure them, ship models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="step", metavar="<step>", required=True)
    for step in table.PIPELINE + table.COMMANDS:
        _add_step(commands, step)
    for name, (help_text, description, targets) in table.GROUPS.items():
        group = commands.add_parser(name, help=help_text, description=description)
        group_commands = group.add_subparsers(dest="target", metavar="<target>", required=True)
        for step in targets:
            _add_step(group_commands, step)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    step: Step = args.step_spec
    try:
        report = step.call(vars(args))
    except UserError as error:
        print(error.one_line(f"productstudio {args.step}"), file=sys.stderr)
        return error.exit_code
    except Exception as error:
        if not is_disk_full(error):
            # register and promote say so themselves (tracking.server_calls); this catches any other MLflow call
            # (deploy promote/rollback, package, train's logging) so that it is one line too.
            server = tracking.server_error(error)
            if server is None:
                raise
            print(server.one_line(f"productstudio {args.step}"), file=sys.stderr)
            return server.exit_code
        # A full disk is never a bug. The artifact writers raise DiskFull (above) saying what is intact; this
        # catches a write outside them (a log line, a cache) so that it is one line too.
        where = f" writing {error.filename}" if getattr(error, "filename", None) else ""
        print(f"productstudio {args.step}: error: no space left on device{where}; free some space and run it again",
              file=sys.stderr)
        return DiskFull.exit_code
    text = step.format(report)
    if text:
        print(text)
    return step.exit_code(report)


if __name__ == "__main__":
    sys.exit(main())
