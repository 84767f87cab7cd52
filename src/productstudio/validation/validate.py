"""Validation step: metadata table -> Great Expectations suite -> report, quarantine list, Data Docs."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

from productstudio.artifacts import sha256_file, write_json_atomic
from productstudio.config import ValidateSettings, section_dict
from productstudio.data.raw import RawDataset
from productstudio.errors import ValidationFailed
from productstudio.paths import VALIDATION_METADATA as METADATA, VALIDATION_REPORT as REPORT

QUARANTINE = "quarantine.tsv"
DATA_DOCS = "data_docs"


def validate(raw_dir: str | Path, out_dir: str | Path, settings: ValidateSettings, quarantine: bool = False) -> dict:
    """Inspect every file of a raw dataset, run the suite, write the report; raise ValidationFailed on failure.

    With ``quarantine=True`` quarantined files are left out of the suite (and of preprocessing), so a
    run can go on when everything else passes. Either way every quarantined file is listed with its reason.
    """
    from productstudio.validation.metadata import build_metadata_table
    from productstudio.validation.suite import run_suite

    raw = RawDataset.open(raw_dir)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    table = build_metadata_table(raw, settings)
    table.to_csv(out / METADATA, index=False)
    bad = table[table["status"] == "quarantined"]
    (out / QUARANTINE).write_text("".join(f"{p}\t{r}\n" for p, r in zip(bad["path"], bad["reason"])))

    checked = table[table["status"] != "quarantined"] if quarantine else table
    outcomes = run_suite(checked.reset_index(drop=True), raw.categories, settings, out / DATA_DOCS)
    success = all(o.success for o in outcomes)
    converted = table[table["status"] == "converted"]
    noted = table[(table["status"] == "ok") & table["reason"].notna()]
    report = {
        "success": success,
        "quarantine_mode": quarantine,
        "source": raw.source,
        "raw_manifest_sha256": sha256_file(raw.root / "manifest.json"),
        "counts": {
            "files": len(table),
            "ok": int((table["status"] == "ok").sum()),
            "converted": len(converted),
            "quarantined": len(bad),
            "leaking_across_splits": int(table["leaks_across_splits"].sum()),
            "near_duplicate_groups": int(table["near_dup_group"].nunique()),
            "per_category": table[table["status"] != "quarantined"]["category"].value_counts().sort_index().to_dict(),
        },
        "expectations": [asdict(o) for o in outcomes],
        "quarantined": [{"path": p, "reason": r} for p, r in zip(bad["path"], bad["reason"])],
        "converted": [{"path": p, "reason": r} for p, r in zip(converted["path"], converted["reason"])],
        "notes": [{"path": p, "reason": r} for p, r in zip(noted["path"], noted["reason"])],
        "params": section_dict(settings),
    }
    write_json_atomic(out / REPORT, report)
    summary = summarize(report, out)
    if not success:
        raise ValidationFailed(summary)
    return report


def summarize(report: dict, out: Path) -> str:
    """A short, readable terminal summary of a validation report."""
    c = report["counts"]
    lines = [
        f"validation {'PASSED' if report['success'] else 'FAILED'}: {c['files']} files, {c['ok']} ok, "
        f"{c['converted']} converted, {c['quarantined']} quarantined, {c['leaking_across_splits']} leaking across splits"
    ]
    for o in report["expectations"]:
        mark = "ok  " if o["success"] else "FAIL"
        extra = f" e.g. {', '.join(o['unexpected'][:3])}" if not o["success"] and o["unexpected"] else ""
        lines.append(f"  {mark} {o['name']}: {o['detail']}{extra}")
    for item in report["quarantined"][:10]:
        lines.append(f"  quarantined {item['path']}: {item['reason']}")
    if len(report["quarantined"]) > 10:
        lines.append(f"  ... and {len(report['quarantined']) - 10} more in {out / QUARANTINE}")
    lines.append(f"report: {out / REPORT}   data docs: {out / DATA_DOCS / 'index.html'}")
    if not report["success"] and report["quarantined"] and not report["quarantine_mode"]:
        lines.append("hint: --quarantine goes on without the quarantined files if everything else passes")
    return "\n".join(lines)
