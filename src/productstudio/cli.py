"""The command-line door: ``productstudio <step> --help``. Parses flags, calls the library, nothing more."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from productstudio import __version__
from productstudio.config import ParamsError, load_params

EPILOG = """The steps read their settings from params.yaml (one section per step) and write artifact
directories with a manifest.json. Usually they run through DVC: 'dvc repro' runs
ingest -> validate -> preprocess and skips what is up to date."""


def _params_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", type=Path, help="params file (default: %(default)s)")


def cmd_ingest(args: argparse.Namespace) -> int:
    from productstudio.data.raw import ingest

    raw = ingest(load_params(args.params).ingest, args.out)
    n_files = len(raw.manifest["inputs"]["files"])
    print(f"ingested {raw.source} ({n_files} files, {len(raw.categories)} categories) into {args.out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from productstudio.validation import ValidationFailed, summarize, validate

    try:
        report = validate(args.raw, args.out, load_params(args.params).validate, quarantine=args.quarantine)
    except ValidationFailed as failure:
        print(failure, file=sys.stderr)
        return 1
    print(summarize(report, args.out))
    if args.metrics:
        from productstudio.artifacts import write_json_atomic

        write_json_atomic(args.metrics, {k: v for k, v in report["counts"].items() if k != "per_category"})
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from productstudio.data.preprocess import preprocess

    manifest = preprocess(args.raw, args.validation, args.out, load_params(args.params).preprocess)
    sizes = ", ".join(f"{name} {info['count']}" for name, info in manifest["splits"].items())
    c, h, w = manifest["image_shape"]
    print(
        f"preprocessed {manifest['counts']['usable']} images into {args.out}: {sizes} "
        f"({c}x{h}x{w} uint8; {manifest['counts']['duplicates_removed']} exact duplicates removed)"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from productstudio.training.loop import train

    manifest = train(load_params(args.params).train, args.processed, args.out, args.plots, device=args.device, track=not args.no_mlflow)
    s = manifest["summary"]
    print(f"trained {manifest['params']['model']} for {s['steps']} steps in {s['minutes']:.1f} min (stopped by {s['stopped_by']})")
    print(f"generator: {args.out}/generator   sample grid: {args.out}/{manifest['sample_grid']}")
    if manifest.get("mlflow_run_id"):
        from productstudio.registry.tracking import tracking_uri

        print(f"MLflow run {manifest['mlflow_run_id']} in {tracking_uri()} (mlflow ui --backend-store-uri {tracking_uri()})")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """Where to look after the main job."""
    from productstudio.data.store import KIND, SPLITS as STORE_SPLITS
    from productstudio.artifacts import read_manifest

    manifest = read_manifest(args.processed, KIND)
    print(f"\nProduct Studio: {args.processed} is ready ({', '.join(manifest['categories'])})")
    print(f"{'split':<6} {'images':>7}  per category")
    for split in STORE_SPLITS:
        info = manifest["splits"][split]
        print(f"{split:<6} {info['count']:>7}  {json.dumps(info['per_category'])}")
    print(f"validation report: {args.validation}/report.json   data docs: {args.validation}/data_docs/index.html")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="productstudio",
        description="Product Studio: learn from a catalogue's product photos, generate and edit images, measure them, ship models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    steps = parser.add_subparsers(dest="step", metavar="<step>", required=True)

    p = steps.add_parser(
        "ingest",
        help="copy a source (Fashion-MNIST or a photo folder) into a raw dataset directory",
        description="Copy the source named by params.yaml 'ingest' into a raw dataset directory with a manifest of "
        "content hashes. Fashion-MNIST is read from ingest.fashion_mnist_dir when it exists, else downloaded and "
        "md5-checked; a photo folder is copied byte for byte (bad files too: validation judges them).",
    )
    _params_arg(p)
    p.add_argument("--out", default="data/raw", type=Path, help="raw dataset directory to (re)create (default: %(default)s)")
    p.set_defaults(func=cmd_ingest)

    p = steps.add_parser(
        "validate",
        help="check every file with a Great Expectations suite; report, quarantine list, Data Docs",
        description="Open every file defensively, build the metadata table (hash, format, mode, size, brightness, "
        "contrast, blur, near-duplicate group) and validate it with a Great Expectations suite whose thresholds come "
        "from params.yaml 'validate'. Writes report.json, metadata.csv, quarantine.tsv and data_docs/. Exits 1 with "
        "a summary when the suite fails. Nothing is deleted.",
    )
    _params_arg(p)
    p.add_argument("--raw", default="data/raw", type=Path, help="raw dataset directory (default: %(default)s)")
    p.add_argument("--out", default="reports/validation", type=Path, help="report directory (default: %(default)s)")
    p.add_argument("--metrics", type=Path, help="also write the counts as a small JSON (DVC metrics)")
    p.add_argument(
        "--quarantine",
        action="store_true",
        help="leave quarantined files out of the suite and of preprocessing, so the run goes on when the rest passes",
    )
    p.set_defaults(func=cmd_validate)

    p = steps.add_parser(
        "preprocess",
        help="resize, convert, deduplicate and split into uint8 tensor shards",
        description="EXIF transpose, colour mode (preprocess.mode), aspect-preserving resize to preprocess.image_size with "
        "padding or centre crop, exact-duplicate removal, seeded stratified split where the source has none. "
        "Writes .npy shards, labels and a manifest; the same inputs and params give byte-identical outputs.",
    )
    _params_arg(p)
    p.add_argument("--raw", default="data/raw", type=Path, help="raw dataset directory (default: %(default)s)")
    p.add_argument("--validation", default="reports/validation", type=Path, help="validation report directory (default: %(default)s)")
    p.add_argument("--out", default="data/processed", type=Path, help="output directory (default: %(default)s)")
    p.set_defaults(func=cmd_preprocess)

    p = steps.add_parser(
        "train",
        help="train the class-conditional GAN (or the CVAE baseline); resumes after an interruption",
        description="Train on the processed train split with params.yaml 'train' until train.max_steps or "
        "train.max_minutes. Checkpoints are atomic and rotated under OUT/checkpoints; running the same command "
        "again continues from the newest one. Logs params, loss curves, sample grids (one row per category) and "
        "the final generator to MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db), and the loss curve "
        "as a CSV for 'dvc plots'.",
    )
    _params_arg(p)
    p.add_argument("--processed", default="data/processed", type=Path, help="processed dataset (default: %(default)s)")
    p.add_argument("--out", default="models/train", type=Path, help="checkpoints, samples, generator (default: %(default)s)")
    p.add_argument("--plots", default="reports/train", type=Path, help="loss curve CSV for dvc plots (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default: %(default)s)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=cmd_train)

    p = steps.add_parser("summary", help="print what the main job produced and where to look")
    p.add_argument("--processed", default="data/processed", type=Path)
    p.add_argument("--validation", default="reports/validation", type=Path)
    p.set_defaults(func=cmd_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ParamsError, FileNotFoundError, ValueError, RuntimeError, KeyError) as error:
        # Expected failures: one line, no traceback.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"productstudio {args.step}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
