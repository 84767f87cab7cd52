"""The champion/challenger policy of the learned editors (restorer, defect and watermark detectors), extended to reference
metrics: a pure function of two evidence dicts and the settings, like ``policy.decide`` for the generator.

Evidence (``registry.editor_registry.editor_evidence`` reads it from the evaluation table, where the learned
model and every tuned classical method were measured in the same run on the same test crops)::

    {"protocol": {...the table's settings...},
     "defects": {"noise25": {"learned": 26.6, "classical": 29.39, "classical_method": "bilateral"}, ...},
     "detector": {"recall": 0.96, "false_positive_area": 0.004, "true_mask_psnr": 49.4, "defect": "dust"}
                 (detectors only; "defect" is "watermark" for the watermark detector, absent means dust)}

Rules (all must pass):

- ``classical``: the learned model beats the best classical method of each target defect by ``margin_db``
  and is not worse than it at any other defect it handles (restorer); detect-then-fill beats the classical
  detector and stays within ``max_gap_db`` of inpainting with the true mask (detector).
- ``recall`` (detector): mask recall at least ``min_recall`` with at most ``max_false_positive_area``.
- ``protocol`` and ``champion`` (when there is a champion): measured the same way, and a higher mean PSNR over
  the target defects than the champion's.
"""

from __future__ import annotations

from productstudio.promotion.policy import Decision, RuleResult, check_protocol


def check_classical(evidence: dict, targets: list[str], margin_db: float) -> RuleResult:
    defects = evidence["defects"]
    missing = [d for d in targets if d not in defects]
    if missing:
        return RuleResult("classical", False, f"not measured on {', '.join(missing)}", {"missing": missing})
    gaps = {d: row["learned"] - row["classical"] for d, row in defects.items()}
    short = {d: gap - margin_db for d, gap in gaps.items() if d in targets and gap < margin_db}
    worse = {d: gap for d, gap in gaps.items() if d not in targets and gap < 0}
    evidence_out = {"gaps_db": gaps, "targets": targets, "margin_db": margin_db}
    if short or worse:
        d, gap = min(short.items(), key=lambda kv: kv[1]) if short else min(worse.items(), key=lambda kv: kv[1])
        row, need = defects[d], margin_db if d in targets else 0.0
        return RuleResult("classical", False, f"{d}: {row['learned']:.2f} dB vs {row['classical_method']} "
                          f"{row['classical']:.2f} ({gaps[d]:+.2f}, needs {need:+.2f})", evidence_out)
    return RuleResult("classical", True, "beats the best classical method: " + ", ".join(
        f"{d} {gaps[d]:+.2f} dB" for d in targets), evidence_out)


def detector_defect(evidence: dict) -> str:
    return evidence["detector"].get("defect", "dust")  # versions registered before the watermark detector: dust


def check_fill(evidence: dict, max_gap_db: float) -> RuleResult:
    detector = evidence["detector"]
    row = evidence["defects"][detector_defect(evidence)]
    gap = detector["true_mask_psnr"] - row["learned"]
    evidence_out = {"learned": row["learned"], "classical": row["classical"], "true_mask": detector["true_mask_psnr"],
                    "gap_db": gap, "max_gap_db": max_gap_db}
    how = (f"detect-then-fill {row['learned']:.2f} dB, true mask {detector['true_mask_psnr']:.2f} (gap {gap:.2f}, "
           f"at most {max_gap_db:.2f}), {row['classical_method']} {row['classical']:.2f}")
    return RuleResult("classical", gap <= max_gap_db and row["learned"] > row["classical"], how, evidence_out)


def check_recall(evidence: dict, min_recall: float, max_false_positive_area: float) -> RuleResult:
    d = evidence["detector"]
    how = (f"mask recall {d['recall']:.3f} (at least {min_recall:.2f}), false-positive area "
           f"{d['false_positive_area']:.4f} (at most {max_false_positive_area:.2f})")
    return RuleResult("recall", d["recall"] >= min_recall and d["false_positive_area"] <= max_false_positive_area,
                      how, dict(d))


def mean_over(evidence: dict, targets: list[str]) -> float:
    return sum(evidence["defects"][d]["learned"] for d in targets) / len(targets)


def check_champion(challenger: dict, champion: dict, targets: list[str]) -> RuleResult:
    ours, theirs = mean_over(challenger, targets), mean_over(champion, targets)
    return RuleResult("champion", ours > theirs, f"mean PSNR over {', '.join(targets)}: {ours:.2f} dB vs champion's "
                      f"{theirs:.2f}", {"challenger": ours, "champion": theirs})


def decide_editor(kind: str, challenger: dict, champion: dict | None, settings) -> Decision:
    """Promote a learned editor's ``challenger`` evidence over ``champion``'s (None: no champion yet);
    ``settings`` is an ``EditorPromoteSettings``."""
    if kind == "restorer":
        targets = list(settings.restorer_targets)
        rules = [check_classical(challenger, targets, settings.restorer_margin_db)]
    else:
        targets = [detector_defect(challenger)]
        rules = [check_fill(challenger, settings.detector_max_gap_db),
                 check_recall(challenger, settings.detector_min_recall, settings.detector_max_false_positive_area)]
    if champion is not None:
        protocol = check_protocol(challenger, champion)
        rules.append(protocol)
        if protocol.passed:
            rules.append(check_champion(challenger, champion, targets))
    failed = [rule for rule in rules if not rule.passed]
    if failed:
        more = f" (also failed: {', '.join(rule.name for rule in failed[1:])})" if len(failed) > 1 else ""
        reason = f"refused by {failed[0].name}: {failed[0].message}{more}"
    else:
        reason = ("promoted as the first champion: " if champion is None else "promoted: ") + "; ".join(
            rule.message for rule in rules if rule.name != "protocol")
    return Decision(promoted=not failed, reason=reason, rules=rules, first_model=champion is None)
