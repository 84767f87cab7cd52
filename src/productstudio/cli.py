"""The command-line door: ``productstudio <step> --help``. Parses flags, calls the library, nothing more."""

from __future__ import annotations

import argparse
import json
import sys
import time
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
    from productstudio.validation.validate import ValidationFailed, summarize, validate

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

    params = load_params(args.params)
    settings = params.baseline_train if args.baseline else params.train
    manifest = train(settings, args.processed, args.out, args.plots, device=args.device, track=not args.no_mlflow,
                     real_stats_dir=args.real_stats)
    s = manifest["summary"]
    print(f"trained {manifest['params']['model']} for {s['steps']} steps in {s['minutes']:.1f} min (stopped by {s['stopped_by']})")
    print(f"generator: {args.out}/generator   sample grid: {args.out}/{manifest['sample_grid']}")
    if manifest.get("mlflow_run_id"):
        from productstudio.tracking import tracking_uri

        print(f"MLflow run {manifest['mlflow_run_id']} in {tracking_uri()} (mlflow ui --backend-store-uri {tracking_uri()})")
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from productstudio.training.classifier import train_classifier

    settings = load_params(args.params).evaluate
    manifest = train_classifier(args.processed, args.out, epochs=settings.classifier_epochs, seed=settings.seed)
    print(f"product classifier: test accuracy {manifest['test_accuracy']:.4f} -> {args.out}")
    return 0


def cmd_real_stats(args: argparse.Namespace) -> int:
    from productstudio.metrics.evaluate import compute_real_stats

    result = compute_real_stats(args.processed, args.out, load_params(args.params).evaluate, device=args.device)
    counts = ", ".join(f"{k} {v}" for k, v in result["counts"].items())
    print(f"real Inception features cached in {args.out} ({counts}; {result['computed']} computed now)")
    if "floor" in result:
        f = result["floor"]
        print(f"floor (real train vs real test, {f['num_a']} each): FID {f['fid']:.3f}  KID {f['kid']:.5f} +- {f['kid_std_error'] or 0:.5f}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from productstudio.metrics.evaluate import evaluate

    report = evaluate(args.generator, args.processed, args.classifier, args.cache, args.out, load_params(args.params).evaluate,
                      device=args.device, track=not args.no_mlflow)
    print(format_evaluation(report))
    return 0


def format_evaluation(report: dict) -> str:
    lines = [f"evaluation of {report['generator']} ({report['model']}), data version {report['data_version'][:12]}"]
    lines.append(f"{'metric':<34} {'value':>10} {'+-':>9}  protocol")
    for r in report["metrics"]:
        err = f"{r['std_error']:.5f}" if r.get("std_error") is not None else ""
        lines.append(f"{r['metric']:<34} {r['value']:>10.4f} {err:>9}  {r['num_generated']} generated vs {r['num_real']} real "
                     f"{r['split']}, {r['feature_network']}, {r['resize_method']}")
    d = report["domain"]
    for key in ("classifier_accuracy_generated", "classifier_accuracy_real_test", "classifier_score_generated",
                "classifier_score_real_test", "classifier_frechet_distance"):
        lines.append(f"{key:<34} {d[key]:>10.4f}")
    if report.get("reconstruction"):  # a VAE: its reconstructions of real test images
        r, p = report["reconstruction"], report["reconstruction"]["protocol"]
        lines.append(f"{'psnr_test_recon (dB)':<34} {r['psnr_test_recon']:>10.4f}            {p['num_images']} {p['reference_split']} "
                     f"images, {p['latent']}, data range {p['data_range']}")
        lines.append(f"{'ssim_test_recon':<34} {r['ssim_test_recon']:>10.4f}            {p['ssim_window']}")
    if report.get("floor"):
        f = report["floor"]
        lines.append(f"{'floor: FID real train vs test':<34} {f['fid']:>10.4f}            {f['num_a']} vs {f['num_b']} real images")
        lines.append(f"{'floor: KID real train vs test':<34} {f['kid']:>10.5f} {f['kid_std_error'] or 0:>9.5f}")
    for name, cats in report["per_category"].items():
        worst = sorted(cats.items(), key=lambda kv: -kv[1]["fid"])
        lines.append(f"per-category {name}: " + ", ".join(f"{c} {v['fid']:.1f}" for c, v in worst))
    if report.get("mlflow_run_id"):
        lines.append(f"logged to MLflow run {report['mlflow_run_id']}")
    return "\n".join(lines)


def format_comparison(reports: list[dict]) -> str:
    """Models side by side on the metrics they share (same protocol, seeds and real statistics)."""
    models = [r["model"] for r in reports]
    rows: dict[str, list] = {}
    for i, report in enumerate(reports):
        values = {m["metric"]: m["value"] for m in report["metrics"]}
        values.update({k: report["domain"][k] for k in ("classifier_accuracy_generated", "classifier_score_generated",
                                                         "classifier_frechet_distance")})
        if report.get("reconstruction"):
            values.update({k: report["reconstruction"][k] for k in ("psnr_test_recon", "ssim_test_recon")})
        for key, value in values.items():
            rows.setdefault(key, [None] * len(reports))[i] = value
    lines = ["model comparison (same seeds, same cached real statistics)", f"{'metric':<34}" + "".join(f"{m:>12}" for m in models)]
    for key, values in rows.items():
        lines.append(f"{key:<34}" + "".join(f"{v:>12.4f}" if v is not None else f"{'-':>12}" for v in values))
    return "\n".join(lines)


def cmd_quantize(args: argparse.Namespace) -> int:
    from productstudio.artifacts import write_json_atomic
    from productstudio.quantization.quantize import flat_metrics, quantize

    params = load_params(args.params)
    report = quantize(args.generator, args.out, params.quantize, processed_dir=args.processed, cache_dir=args.cache,
                      seed=params.evaluate.seed, batch_size=params.evaluate.batch_size,
                      kid_subset_size=params.evaluate.kid_subset_size, kid_subsets=params.evaluate.kid_subsets,
                      progress=lambda message: print(message, flush=True))
    print(format_quantization(report))
    if args.metrics:
        write_json_atomic(args.metrics, flat_metrics(report))
    return 0


def format_quantization(report: dict) -> str:
    lat, thr = report["latency_b1_ms"], report["throughput_b64_img_s"]
    names = {"fp32_eager": "fp32 eager torch", "fp32_eager_channels_last": "fp32 eager, channels-last",
             "fp32_onnxruntime": "fp32 ONNX Runtime", "int8_onnxruntime": "int8 ONNX Runtime"}
    lines = [f"int8 generator of {report['generator']} ({report['backend']}; {report['machine']['threads']} thread(s))",
             f"{'model':<28} {'b1 latency ms':>14} {'b64 images/s':>13}"]
    for key, label in names.items():
        lines.append(f"{label:<28} {lat[key]:>14.2f} {thr[key]:>13.0f}")
    s, size = report["speedup"], report["size_bytes"]
    lines.append(f"speed-up at batch 64: int8 {s['b64_int8_vs_fp32_eager']:.2f}x fp32 eager, "
                 f"{s['b64_int8_vs_fp32_onnxruntime']:.2f}x fp32 ONNX Runtime; at batch 1: {s['b1_int8_vs_fp32_eager']:.2f}x fp32 eager")
    lines.append(f"size: int8 {size['int8_onnx'] / 1e6:.2f} MB vs fp32 {size['fp32_onnx'] / 1e6:.2f} MB (ONNX)")
    f = report["fidelity"]
    lines.append(f"fp32 vs int8 on {f['num_images']} identical inputs: PSNR {f['psnr_db_mean']:.1f} dB (min {f['psnr_db_min']:.1f}), "
                 f"SSIM {f['ssim_mean']:.4f}")
    quality = report["quality"]
    for r in quality.get("metrics", []):
        lines.append(f"{r['metric']}: fp32 {r['fp32']:.4f}  int8 {r['int8']:.4f}  ({r['relative_change']:+.1%}; "
                     f"{r['num_generated']} generated vs {r['num_real']} real {r['reference_split']}, seed {r['latent_seed']})")
    if "skipped" in quality:
        lines.append(f"FID/KID not measured: {quality['skipped']}")
    if report["pruning"]["method"] != "none":
        lines.append(f"pruning {report['pruning']['method']}: {report['pruning']['zero_fraction']:.1%} of the weights are zero")
    t = report["target"]
    verdict = {True: "met", False: "NOT met", None: "FID part not measured"}[t["met"]]
    lines.append(f"target (>= {t['speedup_b64_required']}x at batch 64, FID at most {t['max_fid_increase']:.0%} worse): {verdict}")
    return "\n".join(lines)


def cmd_register(args: argparse.Namespace) -> int:
    from productstudio.artifacts import write_json_atomic
    from productstudio.registry.model_registry import register, registered_record

    if args.int8 and not args.int8.is_dir():
        print(f"no int8 variant at {args.int8}: registering fp32 only")
    result = register(args.generator, args.evaluation, args.processed, load_params(args.params), int8_dir=args.int8)
    if result.created:
        print(f"registered {result.name} version {result.version} ({result.tags['variants']}) with alias 'challenger'; "
              f"data {result.tags['data.version'][:12]}, params {result.tags['params.hash'][:12]}")
    else:
        print(f"{result.name} version {result.version} already holds these weights, data, params and commit: not registered again")
    if args.out:
        write_json_atomic(args.out / "registered.json", registered_record(result))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from productstudio.registry.model_registry import promote

    result = promote(load_params(args.params), args.processed, args.cache, args.out, cache_dir=args.work, device=args.device)
    verdict = "promoted" if result["promoted"] else "kept"
    print(f"{result['model']} version {result['challenger']}: {result['reason']}")
    print(f"champion: version {result['champion_after'] or 'none'} ({verdict}); evidence in {args.out / 'decision.json'}")
    refused = not result["promoted"] and result["champion_after"] != result["challenger"]
    return 1 if args.strict and refused else 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from productstudio.registry.retrain import dvc_repro, retrain_if_changed

    def register_and_promote() -> dict:
        # dvc repro's register/promote stages normally did this; repeated here in case DVC found them
        # up to date (e.g. another tracking store). Both are idempotent.
        cmd_register(argparse.Namespace(params=args.params, generator=args.generator, evaluation=args.evaluation,
                                        processed=args.processed, int8=args.int8, out=None))
        from productstudio.registry.model_registry import client, CHALLENGER

        params = load_params(args.params)
        challenger = client().get_model_version_by_alias(params.register.model_name, CHALLENGER)
        if "promotion.decision" in challenger.tags:
            print(f"version {challenger.version} was already judged: {challenger.tags['promotion.reason']}")
            return {}
        cmd_promote(argparse.Namespace(params=args.params, processed=args.processed, cache=args.cache, out=args.promote_out,
                                       work=args.work, device=args.device, strict=False))
        return {}

    if not args.if_changed:
        dvc_repro()
        register_and_promote()
        return 0
    result = retrain_if_changed(args.params, args.processed, repro=dvc_repro, after=register_and_promote)
    print(result.message)
    return 0


def _serve_model_name(params) -> str:
    return params.serve.model_name or params.register.model_name


def cmd_package(args: argparse.Namespace) -> int:
    from productstudio.serving.archive import archive_from_registry, build_archive

    params = load_params(args.params)
    name = args.name or _serve_model_name(params)
    if args.generator or args.int8:
        source, variant = (args.int8, "int8") if args.int8 else (args.generator, "fp32")
        mar = build_archive(source, args.store, name, variant)
    else:
        variant = args.variant or params.serve.variant
        source = f"models:/{params.register.model_name}@{args.alias or params.serve.alias}"
        mar = archive_from_registry(source, args.store, variant, name)
    print(f"{mar}: {variant} generator from {source}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from productstudio.serving import server

    if args.action == "stop":
        print("TorchServe stopped" if server.stop(args.state) else f"no TorchServe running from {args.state}")
        return 0
    if args.action == "renew-keys":
        handle = server.running_handle(args.state)
        server.renew_keys(handle)
        expiry = server.key_expiry(handle)
        print(f"new inference and management keys in {handle.key_file} (expire: inference {expiry.get('inference')}, "
              f"management {expiry.get('management')})")
        return 0
    if args.action == "status":
        state = server.status(args.state)
        for key, value in state.items():
            print(f"{key}: {value}")
        return 0 if state.get("running") else 3
    params = load_params(args.params)
    settings = params.serve.model_copy(update={"enable_model_api": True}) if args.enable_model_api else params.serve
    name = _serve_model_name(params)
    handle = server.start(settings, args.mar or args.state / "model-store" / f"{name}.mar", args.state, name)
    print(f"TorchServe serves {handle.model}: {handle.predict_url} (management {handle.management_url}, "
          f"metrics {handle.metrics_url}), batches of up to {settings.batch_size} within {settings.max_batch_delay_ms} ms")
    print(f"token authorization is on: keys in {handle.key_file} (inference, management; they expire after {settings.token_expiration_min} min, "
          f"'productstudio serve renew-keys' renews them). Example:")
    print(f"  {handle.curl_example()}")
    print(f"logs in {handle.state_dir / 'logs'}; stop with: productstudio serve stop --state {args.state}")
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
    trained = args.models / "manifest.json"
    if trained.exists():
        train_manifest = read_manifest(args.models)
        s = train_manifest["summary"]
        print(f"\ntrained {train_manifest['params']['model']}: {s['steps']} steps in {s['minutes']:.1f} min "
              f"(stopped by {s['stopped_by']}); sample grid: {args.models / train_manifest['sample_grid']}")
        from productstudio.tracking import tracking_uri

        if train_manifest.get("mlflow_run_id"):
            print(f"MLflow run {train_manifest['mlflow_run_id']}: mlflow ui --backend-store-uri {tracking_uri()}")
    if (args.evaluation / "evaluation.json").exists():
        print()
        print(format_evaluation(json.loads((args.evaluation / "evaluation.json").read_text())))
        print(f"metrics: {args.evaluation / 'metrics.json'} (dvc metrics show); curves: dvc plots show")
    if (args.evaluation / "evaluation.json").exists() and (args.baseline_evaluation / "evaluation.json").exists():
        reports = [json.loads((d / "evaluation.json").read_text()) for d in (args.evaluation, args.baseline_evaluation)]
        print()
        print(format_comparison(reports))
        print(f"baseline details: {args.baseline_evaluation / 'evaluation.json'}")
    if (args.quantized / "quantization.json").exists():
        print()
        print(format_quantization(json.loads((args.quantized / "quantization.json").read_text())))
        print(f"int8 model: {args.quantized / 'generator.int8.onnx'} (productstudio.quantization.load_quantized)")
    return 0


def cmd_deploy_kserve(args: argparse.Namespace) -> int:
    from productstudio.deploy import kserve

    params = load_params(args.params)
    options = kserve.options_from_settings(params.deploy)
    if args.example:  # the committed examples: fixed versions, no registry needed
        stable, canary, percent = kserve.EXAMPLE_STABLE, kserve.EXAMPLE_CANARY, kserve.EXAMPLE_PERCENT
    else:
        percent = args.percent if args.percent is not None else params.deploy.canary_percent
        if not 0 <= percent <= 100:
            raise ValueError(f"--percent {percent}: the canary share must be in 0..100")
        name = args.model or params.register.model_name
        stable = kserve.from_registry(f"models:/{name}@{args.alias}")
        canary = kserve.from_registry(f"models:/{name}@{args.canary_alias}") if args.canary_alias else None
    crd = args.crd or kserve.default_crd_path()
    if not Path(crd).is_file():
        raise FileNotFoundError(f"{crd}: the KServe CRD to validate against is missing (--crd PATH)")
    for path in kserve.write_manifests(args.out, stable, options, canary, percent if canary else None, crd):
        print(f"wrote {path} (checked against {Path(crd).name})")
    return 0


def cmd_deploy_canary(args: argparse.Namespace) -> int:
    from productstudio.deploy import local_canary as deploy

    params = load_params(args.params)
    percent = args.percent if args.percent is not None else params.deploy.canary_percent
    if not 0 <= percent <= 100:
        raise ValueError(f"--percent {percent}: the canary share must be in 0..100")
    record = deploy.start_canary(params, args.state, percent)
    print(f"canary of {record['model']}: champion v{record['stable_version']} and challenger v{record['canary_version']} "
          f"behind nginx at {record['url']}, {percent:g} % to the challenger")
    print(f"client key in {record['key_file']} (nginx checks it and sends each TorchServe its own token). Example:")
    print(f"  curl -si -H \"Authorization: Bearer $(cat {record['key_file']})\" -H 'Content-Type: application/json' "
          f"-d '{{\"category\": \"Sneaker\", \"count\": 1}}' {record['predict_url']} | grep -i x-model")
    print(f"then: productstudio deploy status | analyze | promote | rollback | stop --state {args.state}")
    return 0


def cmd_deploy_status(args: argparse.Namespace) -> int:
    from productstudio.deploy import local_canary as deploy

    status = deploy.deploy_status(args.state)
    print(json.dumps(status, indent=2) if args.json else deploy.format_status(status))
    return 0 if status["running"] else 3


def cmd_deploy_analyze(args: argparse.Namespace) -> int:
    from productstudio.deploy import local_canary as deploy

    params = load_params(args.params)
    result = deploy.analyze(params, args.state, args.processed, args.real_stats, args.samples)
    for side in ("stable", "canary"):
        s = result["sides"][side]
        rate = "-" if s["error_rate"] is None else f"{s['error_rate']:.2%}"
        p95 = "-" if s["p95_ms"] is None else f"{s['p95_ms']:.1f} ms"
        kid = "-" if s["kid"] is None else f"{s['kid']:.4f} (kid{result['kid_samples']}_test)"
        print(f"{side:<7} v{result[side + '_version']}: {s['requests']} requests, error rate {rate}, p95 {p95}, KID {kid}")
    print(f"recommendation: {result['recommendation']}: {result['reason']}")
    return 0


def cmd_deploy_promote(args: argparse.Namespace) -> int:
    from productstudio.deploy import local_canary as deploy

    result = deploy.promote(args.state)
    print(f"all traffic to v{result['canary_version']}; {result['registered_model']}@champion -> v{result['champion']}")
    return 0


def cmd_deploy_rollback(args: argparse.Namespace) -> int:
    from productstudio.deploy import local_canary as deploy

    result = deploy.rollback(args.state, args.reason)
    print(f"all traffic to v{result['stable_version']} (champion unchanged); v{result['canary_version']} tagged "
          f"{deploy.ROLLBACK_TAG}")
    return 0


def cmd_deploy_renew_keys(args: argparse.Namespace) -> int:
    from productstudio.deploy import local_canary as deploy

    if args.every is not None and args.every <= 0:
        raise ValueError(f"--every {args.every}: must be a positive number of minutes")
    while True:
        result = deploy.renew_keys(args.state)
        expiry = ", ".join(f"{side} {times.get('inference')}" for side, times in result["expiry"].items())
        print(f"{result['renewed_at']}: new TorchServe keys handed to nginx; inference keys expire: {expiry}", flush=True)
        if not args.every:
            return 0
        time.sleep(args.every * 60)


def cmd_deploy_stop(args: argparse.Namespace) -> int:
    from productstudio.deploy import local_canary as deploy

    print("canary stopped" if deploy.stop_canary(args.state) else f"no canary running from {args.state}")
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
    p.add_argument(
        "--baseline", action="store_true",
        help="train the baseline instead: params.yaml 'train' overlaid with 'baseline' (default: a CVAE, 3 min)",
    )
    p.add_argument(
        "--real-stats", type=Path, default=None,
        help="the real_stats stage's feature cache: measure KID every train.kid_every steps (time-to-quality curve)",
    )
    p.set_defaults(func=cmd_train)

    p = steps.add_parser(
        "train-classifier",
        help="train the product classifier used by evaluation (domain features and accuracy on generated images)",
        description="A small CNN trained for evaluate.classifier_epochs epochs on the processed train split; reports test accuracy.",
    )
    _params_arg(p)
    p.add_argument("--processed", default="data/processed", type=Path)
    p.add_argument("--out", default="models/classifier", type=Path)
    p.set_defaults(func=cmd_train_classifier)

    p = steps.add_parser(
        "real-stats",
        help="cache the real images' Inception features once per data version; report the real-vs-real floor",
        description="Extract the TF-Inception (FID) features of the real images the metrics in evaluate.metrics "
        "compare against, once per data version (a DVC output), and compute FID/KID of real train vs real test at "
        "the same counts: the floor a perfect generator would reach.",
    )
    _params_arg(p)
    p.add_argument("--processed", default="data/processed", type=Path)
    p.add_argument("--out", default="models/real_stats", type=Path)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_real_stats)

    p = steps.add_parser(
        "evaluate",
        help="FID/KID with their protocol, per category, plus domain-classifier metrics; DVC metrics and MLflow",
        description="Generate evaluate.metrics' largest count of images from fixed seeds (categories in turn), "
        "compute the named metrics (e.g. fid2k_test) against the cached real features, per-category FID, the "
        "classifier's accuracy and score on generated images, and write OUT/metrics.json (DVC metrics) and "
        "OUT/evaluation.json (every number with its protocol). Logged to the training run in MLflow.",
    )
    _params_arg(p)
    p.add_argument("--generator", default="models/train/generator", type=Path)
    p.add_argument("--processed", default="data/processed", type=Path)
    p.add_argument("--classifier", default="models/classifier", type=Path)
    p.add_argument("--cache", default="models/real_stats", type=Path, help="real feature cache (real-stats output)")
    p.add_argument("--out", default="reports/evaluate", type=Path)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-mlflow", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = steps.add_parser(
        "quantize",
        help="int8 generator for CPU serving (ONNX Runtime), with its measured speed-up, size and quality cost",
        description="Export the generator to ONNX, quantize it to int8 with ONNX Runtime static quantization "
        "(QDQ, calibrated on quantize.calibration_samples latents and categories; optional pruning first), and "
        "measure in the same run: latency at batch 1 and throughput at batch 64 of fp32 (eager torch, and ONNX "
        "Runtime) against int8, file sizes, PSNR/SSIM between fp32 and int8 outputs on identical inputs, and the "
        "named FID/KID metrics in quantize.metrics for both on the same seeds (evaluate.seed) against the cached "
        "real features. Writes OUT/generator.int8.onnx, config.json, quantization.json (the report) and "
        "manifest.json; --metrics writes the flat numbers for DVC. Settings: params.yaml 'quantize'.",
    )
    _params_arg(p)
    p.add_argument("--generator", default="models/train/generator", type=Path, help="fp32 generator (default: %(default)s)")
    p.add_argument("--processed", default="data/processed", type=Path, help="processed dataset, for FID/KID (default: %(default)s)")
    p.add_argument("--cache", default="models/real_stats", type=Path, help="real feature cache (real-stats output) (default: %(default)s)")
    p.add_argument("--out", default="models/quantized", type=Path, help="output directory, replaced (default: %(default)s)")
    p.add_argument("--metrics", type=Path, help="also write the flat numbers here (DVC metrics)")
    p.set_defaults(func=cmd_quantize)

    p = steps.add_parser(
        "register",
        help="register the generator (and an int8 variant) in the MLflow Model Registry as the 'challenger'",
        description="Log the generator to MLflow as a pyfunc 'from code' (safetensors weights, no pickle) with a "
        "signature (category, seed -> uint8 images) and an input example, register it under register.model_name "
        "(params.yaml), tag the version with data.version, git.commit, params.hash, model.sha256 and the evaluation "
        "metrics with their protocol (metrics.protocol), and give it the alias 'challenger'. With --int8 DIR the "
        "quantized variant is a second artifact of the same version. The same weights, data, params and commit are "
        "not registered twice. Store: MLFLOW_TRACKING_URI (default sqlite:///mlflow.db) or a server URL.",
    )
    _params_arg(p)
    p.add_argument("--generator", default="models/train/generator", type=Path, help="generator directory (default: %(default)s)")
    p.add_argument("--evaluation", default="reports/evaluate", type=Path, help="metrics.json + evaluation.json (default: %(default)s)")
    p.add_argument("--processed", default="data/processed", type=Path, help="processed dataset, for data.version (default: %(default)s)")
    p.add_argument("--int8", type=Path, help="int8 variant directory (quantization output); skipped when absent")
    p.add_argument("--out", type=Path, help="write OUT/registered.json (name, version, tags) for DVC")
    p.set_defaults(func=cmd_register)

    p = steps.add_parser(
        "promote",
        help="judge the 'challenger' against the 'champion' under one protocol; move 'champion' or refuse, with the reason",
        description="Measure challenger and champion on the same named FID metric (promote.metric, default the first "
        "FID in evaluate.metrics), the same latent seeds and the same cached real features, with a bootstrap "
        "uncertainty, per-category FIDs and the int8 variant's FID. Policy (params.yaml 'promote'): the challenger "
        "must win by more than max(min_margin, z x uncertainty), no category may get worse by more than "
        "category_tolerance, int8 may cost at most max_int8_fid_increase; the first champion needs FID <= max_fid. "
        "Prints one line with the rule that decided and by how much, tags the version (promotion.decision, "
        "promotion.reason), logs promotion/decision.json to its run and writes OUT/decision.json. "
        "A refusal exits 0 (a valid outcome) unless --strict.",
    )
    _params_arg(p)
    p.add_argument("--processed", default="data/processed", type=Path, help="processed dataset (default: %(default)s)")
    p.add_argument("--cache", default="models/real_stats", type=Path, help="real feature cache, read only (default: %(default)s)")
    p.add_argument("--out", default="reports/promote", type=Path, help="decision.json goes here (default: %(default)s)")
    p.add_argument("--work", default=".scratch/promote", type=Path, help="cache of generated features (default: %(default)s)")
    p.add_argument("--device", default="auto")
    p.add_argument("--strict", action="store_true", help="exit 1 when the challenger is refused (for CI gates)")
    p.set_defaults(func=cmd_promote)

    p = steps.add_parser(
        "retrain",
        help="run the pipeline, then register and promote; with --if-changed only when data or params changed",
        description="With --if-changed: compare the current data version (sha256 of data/processed/manifest.json) "
        "and params hash (preprocess + train) with the tags of the newest registered version; when equal, say so "
        "and exit 0 in seconds. Otherwise run 'dvc repro' (whose register and promote stages register the new "
        "model and judge it), then make sure it is registered and judged. Run 'dvc pull' first on a fresh checkout.",
    )
    _params_arg(p)
    p.add_argument("--if-changed", action="store_true", help="do nothing when data and params equal the last registered version's")
    p.add_argument("--processed", default="data/processed", type=Path)
    p.add_argument("--generator", default="models/train/generator", type=Path)
    p.add_argument("--evaluation", default="reports/evaluate", type=Path)
    p.add_argument("--int8", type=Path, help="int8 variant directory to register with the model")
    p.add_argument("--cache", default="models/real_stats", type=Path)
    p.add_argument("--promote-out", default="reports/promote", type=Path)
    p.add_argument("--work", default=".scratch/promote", type=Path)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_retrain)

    p = steps.add_parser(
        "package",
        help="build a TorchServe .mar of the generator (fp32 or int8) from a registry alias or a local directory",
        description="By default archives models:/<register.model_name>@<serve.alias> (variant serve.variant) from the "
        "MLflow registry; --generator or --int8 archive a local directory instead. The archive holds the project's "
        "handler, the weights (safetensors or ONNX, never a pickle) and config.json.",
    )
    _params_arg(p)
    p.add_argument("--alias", help="registry alias (default: serve.alias)")
    p.add_argument("--variant", choices=["fp32", "int8"], help="registered variant (default: serve.variant)")
    p.add_argument("--generator", type=Path, help="archive this fp32 generator directory (e.g. models/train/generator)")
    p.add_argument("--int8", type=Path, help="archive this int8 directory (e.g. models/quantized)")
    p.add_argument("--name", help="model name in TorchServe (default: serve.model_name or register.model_name)")
    p.add_argument("--store", default=".scratch/serve/model-store", type=Path, help="where the .mar goes (default: %(default)s)")
    p.set_defaults(func=cmd_package)

    p = steps.add_parser(
        "serve",
        help="start, stop or check TorchServe (127.0.0.1, token authorization on, settings from params.yaml 'serve')",
        description="start: write STATE/config.properties (APIs on 127.0.0.1 at serve.*_port, dynamic batching "
        "serve.batch_size / serve.max_batch_delay_ms, serve.max_request_size, allowed_urls limited to the model "
        "store, model registration off) and run TorchServe in the background until the model is ready. The "
        "tokens are in STATE/key_file.json; send 'Authorization: Bearer <inference key>'.",
    )
    p.add_argument("action", choices=["start", "stop", "status", "renew-keys"],
                   help="renew-keys: new inference and management keys (they expire after serve.token_expiration_min)")
    _params_arg(p)
    p.add_argument("--state", default=".scratch/serve", type=Path, help="config, keys, logs, model store (default: %(default)s)")
    p.add_argument("--mar", type=Path, help="archive to serve (default: STATE/model-store/<model name>.mar)")
    p.add_argument("--enable-model-api", action="store_true", help="allow model registration over the management API")
    p.set_defaults(func=cmd_serve)

    p = steps.add_parser("summary", help="print what the main job produced and where to look")
    p.add_argument("--processed", default="data/processed", type=Path)
    p.add_argument("--validation", default="reports/validation", type=Path)
    p.add_argument("--models", default="models/train", type=Path)
    p.add_argument("--evaluation", default="reports/evaluate", type=Path)
    p.add_argument("--baseline-evaluation", default="reports/evaluate_baseline", type=Path)
    p.add_argument("--quantized", default="models/quantized", type=Path)
    p.set_defaults(func=cmd_summary)

    deploy = steps.add_parser(
        "deploy",
        help="deploy registered versions: Kubernetes (KServe) manifests; canary through nginx",
        description="Deployment of registered model versions. 'deploy kserve' writes KServe InferenceService manifests.",
    )
    deploy_steps = deploy.add_subparsers(dest="deploy_step", metavar="<target>", required=True)
    p = deploy_steps.add_parser(
        "kserve",
        help="write KServe InferenceService YAML for the champion (and a canary step for the challenger)",
        description="Resolve --alias (and --canary-alias) in the MLflow Model Registry (MLFLOW_TRACKING_URI) and write "
        "OUT/<service>-stable.yaml: an InferenceService whose pytorch predictor (KServe's TorchServe runtime) loads "
        "<deploy.kserve_storage_prefix>/<model>/<version>/ (config/config.properties and model-store/<model>.mar, as "
        "'productstudio package' builds them), with the version's lineage (data version, git commit, hashes) as "
        "annotations, CPU/memory requests and limits, a non-root unprivileged container. With --canary-alias also "
        "OUT/<service>-canary.yaml: the same InferenceService with the challenger's storageUri and "
        "canaryTrafficPercent P; applying it makes KServe send P % to the challenger and keep the rest on the last "
        "rolled-out revision (KServe's Knative mode only). Every manifest is validated against the KServe CRD's schema "
        "(--crd) plus checks the CRD leaves out (unknown fields, percent in 0..100, security settings) before it is "
        "written. Settings: params.yaml 'deploy' (kserve_*). TorchServe's token authorization is off inside the pod "
        "(its keys are per pod and expire): authenticate at the mesh, see deploy/kserve/README.md.",
    )
    _params_arg(p)
    p.add_argument("--model", help="registered model name (default: params.yaml register.model_name)")
    p.add_argument("--alias", default="champion", help="alias of the version serving 100 %% (default: %(default)s)")
    p.add_argument("--canary-alias", help="alias of the version to canary, e.g. challenger (default: no canary)")
    p.add_argument("--percent", type=int, help="canary share of traffic, 0..100 (default: params.yaml deploy.canary_percent)")
    p.add_argument("--out", default="deploy/kserve", type=Path, help="directory for the YAML files (default: %(default)s)")
    p.add_argument("--crd", type=Path, help="InferenceService CRD to validate against (default: ../shared/schemas/kserve/...)")
    p.add_argument("--example", action="store_true",
                   help="render the committed examples (fixed versions 3 and 4, no registry) instead")
    p.set_defaults(func=cmd_deploy_kserve)

    def state_arg(p):
        p.add_argument("--state", default=".scratch/deploy", type=Path,
                       help="both TorchServe state dirs, nginx's, deploy.json (default: %(default)s)")

    p = deploy_steps.add_parser(
        "canary",
        help="serve champion and challenger locally behind nginx, P %% of requests to the challenger",
        description="Archive the registry's champion and challenger (MLFLOW_TRACKING_URI), start one TorchServe for each "
        "(serve.*_port and deploy.canary_*_port) and nginx on 127.0.0.1:deploy.proxy_port splitting requests with "
        "split_clients. Clients send the proxy's key (STATE/proxy/client_key); responses carry X-Model-Side and "
        "X-Model-Version.",
    )
    _params_arg(p)
    state_arg(p)
    p.add_argument("--percent", type=float, help="share of requests to the challenger, 0..100 (default: deploy.canary_percent)")
    p.set_defaults(func=cmd_deploy_canary)
    p = deploy_steps.add_parser("status", help="per-version requests, error rate, latency percentiles (nginx log, TorchServe metrics)")
    state_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_deploy_status)
    p = deploy_steps.add_parser(
        "analyze", help="compare canary with stable (error rate, p95, KID of served images) and recommend promote or rollback",
        description="Policy: params.yaml deploy (min_requests, max_error_rate_increase, max_p95_ratio, kid_samples, "
        "max_kid_increase). KID: kid_samples images served by each side against the cached real test features.")
    _params_arg(p)
    state_arg(p)
    p.add_argument("--samples", type=int, help="images per side for KID; 0 skips it (default: deploy.kid_samples)")
    p.add_argument("--processed", default="data/processed", type=Path)
    p.add_argument("--real-stats", default="models/real_stats", type=Path)
    p.set_defaults(func=cmd_deploy_analyze)
    p = deploy_steps.add_parser("promote", help="all traffic to the challenger; champion alias -> challenger's version")
    state_arg(p)
    p.set_defaults(func=cmd_deploy_promote)
    p = deploy_steps.add_parser("rollback", help="all traffic to the champion; tag the challenger version with the rollback")
    state_arg(p)
    p.add_argument("--reason", default="manual rollback", help="recorded in the tag (default: %(default)s)")
    p.set_defaults(func=cmd_deploy_rollback)
    p = deploy_steps.add_parser(
        "renew-keys", help="new TorchServe tokens for both sides, handed to nginx (run before serve.token_expiration_min)",
        description="TorchServe's inference and management keys expire after serve.token_expiration_min (60 by default). "
        "This asks each TorchServe for new ones (with its non-expiring API key) and reloads nginx with them; clients keep "
        "the proxy's key. With --every it repeats until interrupted (e.g. --every 45 for 60-minute keys).")
    state_arg(p)
    p.add_argument("--every", type=float, help="repeat every this many minutes (default: once)")
    p.set_defaults(func=cmd_deploy_renew_keys)
    p = deploy_steps.add_parser("stop", help="stop nginx and both TorchServe instances")
    state_arg(p)
    p.set_defaults(func=cmd_deploy_stop)
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
