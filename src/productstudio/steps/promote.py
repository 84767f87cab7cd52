"""Step 'promote': judge the 'challenger' against the 'champion' under one protocol; move 'champion' or refuse."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import DEVICE, Arg, Step


def run(params, processed: Path, cache: Path, out: Path, work: Path, device: str, strict: bool) -> dict:
    from productstudio.promotion.champion import promote_challenger

    result = promote_challenger(params, processed, cache, out, features_dir=work, device=device)
    return {**result, "out": out, "strict": strict}


def format(result: dict) -> str:
    verdict = "promoted" if result["promoted"] else "kept"
    return (f"{result['model']} version {result['challenger']}: {result['reason']}\n"
            f"champion: version {result['champion_after'] or 'none'} ({verdict}); evidence in {result['out'] / 'decision.json'}")


def exit_code(result: dict) -> int:
    refused = not result["promoted"] and result["champion_after"] != result["challenger"]
    return 1 if result["strict"] and refused else 0


STEP = Step(
    name="promote",
    help="judge the 'challenger' against the 'champion' under one protocol; move 'champion' or refuse, with the reason",
    description="Measure challenger and champion on the same named FID metric (promote.metric, default the first "
    "FID in evaluate.metrics), the same latent seeds and the same cached real features, with a bootstrap "
    "uncertainty, per-category FIDs and the int8 variant's FID. Policy (params.yaml 'promote'): the challenger "
    "must win by more than max(min_margin, z x uncertainty), no category may get worse by more than "
    "category_tolerance, int8 may cost at most max_int8_fid_increase; the first champion needs FID <= max_fid. "
    "Prints one line with the rule that decided and by how much, tags the version (promotion.decision, "
    "promotion.reason), logs promotion/decision.json to its run and writes OUT/decision.json. "
    "A refusal exits 0 (a valid outcome) unless --strict.",
    run=run,
    format=format,
    exit_code=exit_code,
    params=("promote", "register.model_name", "evaluate.metrics", "protocol"),
    args=(
        Arg("--processed", "processed dataset", paths.PROCESSED),
        Arg("--cache", "real feature cache, read only", paths.REAL_STATS),
        Arg("--out", "decision.json goes here", paths.PROMOTE),
        Arg("--work", "cache of generated images' features (shared with evaluate and quantize)", paths.GENERATED_FEATURES),
        DEVICE,
        Arg("--strict", "exit 1 when the challenger is refused (for CI gates)", action="store_true"),
    ),
)
