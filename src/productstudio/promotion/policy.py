"""The champion/challenger policy: a pure function of two evaluation reports and the settings.

No MLflow, no torch: ``decide`` takes plain dicts (what ``productstudio.promotion.report`` measures) and
the ``promote`` settings (``PromoteSettings`` or a dict with the same keys), and returns a ``Decision``
whose ``reason`` is one line and whose ``rules`` carry the evidence of every rule.

A report looks like::

    {"metric": "fid1k_test", "fid": 137.5, "fid_std": 1.9,            # bootstrap std of the FID
     "per_category": {"Shirt": 180.2, ...},                          # FID per category, same protocol
     "int8": {"fid": 139.0} or None,                                 # the int8 variant, same protocol
     "protocol": {...}}                                              # seeds, counts, network, data version

Rules (all must pass):

- ``protocol``: both reports were measured the same way (otherwise the numbers are not comparable).
- ``quality_floor`` (first champion only): FID <= ``max_fid``.
- ``fid_margin``: champion FID - challenger FID > max(``min_margin``, ``z`` * sqrt(std_a^2 + std_b^2)),
  i.e. the challenger wins by more than the measurement's own uncertainty.
- ``categories``: no category's FID rises by more than ``category_tolerance`` (a share of the champion's).
- ``int8``: the int8 variant's FID is at most ``max_int8_fid_increase`` (a share) above fp32's; passes
  with a note when there is no int8 variant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

POLICY_KEYS = ("metric", "z", "min_margin", "category_tolerance", "max_int8_fid_increase", "max_fid")


@dataclass(frozen=True)
class RuleResult:
    name: str
    passed: bool
    message: str  # one line, with the numbers
    evidence: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str  # one line: what decided it and by how much
    rules: list[RuleResult]
    first_model: bool

    @property
    def failed(self) -> list[RuleResult]:
        return [rule for rule in self.rules if not rule.passed]

    def to_dict(self) -> dict:
        return {"promoted": self.promoted, "reason": self.reason, "first_model": self.first_model,
                "rules": [asdict(rule) for rule in self.rules]}


def _policy(settings: Any) -> dict:
    raw = settings if isinstance(settings, Mapping) else settings.model_dump()
    missing = [key for key in POLICY_KEYS if key not in raw]
    if missing:
        raise ValueError(f"promotion policy lacks {', '.join(missing)}")
    return {key: raw[key] for key in POLICY_KEYS}


def _pct(share: float) -> str:
    return f"{share * 100:+.1f} %"


def check_protocol(challenger: dict, champion: dict) -> RuleResult:
    a, b = challenger.get("protocol", {}), champion.get("protocol", {})
    differing = sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key))
    if differing:
        key = differing[0]
        return RuleResult("protocol", False, f"measured differently ({key}: {a.get(key)!r} vs champion's {b.get(key)!r})",
                          {"differing": differing})
    return RuleResult("protocol", True, "same protocol", {"protocol": a})


def check_floor(challenger: dict, policy: dict) -> RuleResult:
    fid, limit = challenger["fid"], policy["max_fid"]
    evidence = {"fid": fid, "max_fid": limit}
    if fid <= limit:
        return RuleResult("quality_floor", True, f"{policy['metric']} {fid:.2f} within the floor {limit:.2f}", evidence)
    return RuleResult("quality_floor", False, f"{policy['metric']} {fid:.2f} is {fid - limit:.2f} above the floor {limit:.2f}", evidence)


def check_margin(challenger: dict, champion: dict, policy: dict) -> RuleResult:
    gain = champion["fid"] - challenger["fid"]
    uncertainty = math.hypot(challenger.get("fid_std") or 0.0, champion.get("fid_std") or 0.0)
    required = max(policy["min_margin"], policy["z"] * uncertainty)
    evidence = {"challenger_fid": challenger["fid"], "champion_fid": champion["fid"], "gain": gain,
                "uncertainty": uncertainty, "required": required, "z": policy["z"], "min_margin": policy["min_margin"]}
    how = (f"{policy['metric']} {challenger['fid']:.2f} vs champion's {champion['fid']:.2f}: gain {gain:.2f}, "
           f"needs more than {required:.2f} (max({policy['min_margin']:g}, {policy['z']:g} x uncertainty {uncertainty:.2f}))")
    return RuleResult("fid_margin", gain > required, how, evidence)


def check_categories(challenger: dict, champion: dict, policy: dict) -> RuleResult:
    ours, theirs = challenger.get("per_category") or {}, champion.get("per_category") or {}
    shared = [name for name in theirs if name in ours]
    if not shared:
        return RuleResult("categories", True, "no per-category FIDs to compare", {})
    rises = {name: (ours[name] - theirs[name]) / theirs[name] for name in shared}
    worst = max(rises, key=rises.get)
    tolerance = policy["category_tolerance"]
    evidence = {"rises": rises, "worst": worst, "tolerance": tolerance}
    how = (f"worst category {worst}: FID {theirs[worst]:.2f} -> {ours[worst]:.2f} ({_pct(rises[worst])}, "
           f"tolerance {_pct(tolerance)})")
    return RuleResult("categories", rises[worst] <= tolerance, how, evidence)


def check_int8(challenger: dict, policy: dict) -> RuleResult:
    int8 = challenger.get("int8")
    if not int8:
        return RuleResult("int8", True, "no int8 variant", {})
    if "fid" not in int8:  # present but not measurable: do not vouch for it
        return RuleResult("int8", False, f"int8 variant could not be evaluated ({int8.get('error')})", dict(int8))
    cost = (int8["fid"] - challenger["fid"]) / challenger["fid"]
    bound = policy["max_int8_fid_increase"]
    evidence = {"fp32_fid": challenger["fid"], "int8_fid": int8["fid"], "cost": cost, "bound": bound}
    how = f"int8 FID {int8['fid']:.2f} vs fp32 {challenger['fid']:.2f} ({_pct(cost)}, bound {_pct(bound)})"
    return RuleResult("int8", cost <= bound, how, evidence)


def decide(challenger: dict, champion: dict | None, settings: Any) -> Decision:
    """Promote ``challenger`` over ``champion`` (None: there is no champion yet) under the policy ``settings``."""
    policy = _policy(settings)
    if champion is None:
        rules = [check_floor(challenger, policy), check_int8(challenger, policy)]
    else:
        rules = [check_protocol(challenger, champion)]
        if rules[0].passed:  # numbers measured differently are not compared at all
            rules += [check_margin(challenger, champion, policy), check_categories(challenger, champion, policy)]
        rules.append(check_int8(challenger, policy))
    failed = [rule for rule in rules if not rule.passed]
    if failed:
        more = f" (also failed: {', '.join(rule.name for rule in failed[1:])})" if len(failed) > 1 else ""
        reason = f"refused by {failed[0].name}: {failed[0].message}{more}"
    elif champion is None:
        reason = f"promoted as the first champion: {rules[0].message}"
    else:
        reason = f"promoted: {rules[1].message}; {rules[2].message}"
    return Decision(promoted=not failed, reason=reason, rules=rules, first_model=champion is None)
