"""Step 'retrain': the pipeline, then register and promote; with --if-changed only when data or params changed."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps import promote, register
from productstudio.steps.step import DEVICE, Arg, Step


def run(params: Path, if_changed: bool, no_pull: bool, processed: Path, generator: Path, evaluation: Path, int8: Path | None,
        cache: Path, promote_out: Path, work: Path, device: str) -> dict:
    from productstudio.config import load_params
    from productstudio.registry.retrain import dvc_pull, dvc_repro, retrain_if_changed

    settings = load_params(params)  # params: the file's path (retrain_if_changed hashes its sections)

    def register_and_promote() -> dict:
        # dvc repro's register/promote stages normally did this; repeated here in case DVC found them
        # up to date (e.g. another tracking store). Both are idempotent.
        from productstudio.registry.model_registry import CHALLENGER, client

        print(register.format(register.run(settings, generator, evaluation, processed, int8, out=None)))
        challenger = client().get_model_version_by_alias(settings.register.model_name, CHALLENGER)
        if "promotion.decision" in challenger.tags:
            print(f"version {challenger.version} was already judged: {challenger.tags['promotion.reason']}")
            return {}
        print(promote.format(promote.run(settings, processed, cache, promote_out, work, device, strict=False)))
        return {}

    if not if_changed:
        dvc_repro()
        register_and_promote()
        return {"message": ""}
    result = retrain_if_changed(params, processed, repro=dvc_repro, after=register_and_promote, pull=None if no_pull else dvc_pull)
    return {"message": result.message}


def format(result: dict) -> str:
    return result["message"]


STEP = Step(
    name="retrain",
    help="run the pipeline, then register and promote; with --if-changed only when data or params changed",
    description="With --if-changed: compare the current data version (the content hash of data/processed: its shards, labels, "
    "categories and params, not the commit that wrote them) "
    "and params hash (preprocess + train) with the tags of the newest registered version; when equal, say so "
    "and exit 0 in seconds. Otherwise run 'dvc repro' (whose register and promote stages register the new "
    "model and judge it), then make sure it is registered and judged. On a fresh checkout (no processed data) it "
    "first pulls only the processed data from the default DVC remote (e.g. S3), unless --no-pull.",
    run=run,
    format=format,
    args=(
        # Its own --params: --if-changed hashes the file's sections, in seconds and without torch.
        Arg("--params", "params file", paths.PARAMS),
        Arg("--if-changed", "do nothing when data and params equal the last registered version's", action="store_true"),
        Arg("--no-pull", "with --if-changed: do not pull a missing processed dataset from the DVC remote "
            "(then a missing one means retrain)", action="store_true"),
        Arg("--processed", "processed dataset", paths.PROCESSED),
        Arg("--generator", "generator directory", paths.GENERATOR),
        Arg("--evaluation", "metrics.json + evaluation.json", paths.EVALUATION),
        Arg("--int8", "int8 variant directory to register with the model"),
        Arg("--cache", "real feature cache, read only", paths.REAL_STATS),
        Arg("--promote-out", "decision.json goes here", paths.PROMOTE),
        Arg("--work", "cache of generated features", paths.GENERATED_FEATURES),
        DEVICE,
    ),
)
