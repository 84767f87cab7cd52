"""The canary policy (deploy analyze): each rule in both directions, and the status arithmetic."""

from pathlib import Path

import pytest

from productstudio.config import DeploySettings
from productstudio.deploy.local_canary import canary_decision, percentile, side_stats

POLICY = DeploySettings(min_requests=100, max_error_rate_increase=0.01, max_p95_ratio=1.5, min_p95_increase_ms=50,
                        max_kid_increase=0.01)
STABLE = {"requests": 900, "error_rate": 0.0, "p95_ms": 200.0, "kid": 0.020}
GOOD = {"requests": 100, "error_rate": 0.005, "p95_ms": 290.0, "kid": 0.025}


def decide(**canary):
    return canary_decision(STABLE, {**GOOD, **canary}, POLICY)


def test_a_good_canary_is_promoted_with_a_one_line_reason():
    decision = decide()
    assert decision.action == "promote"
    assert "\n" not in decision.reason and "KID 0.0250 vs 0.0200" in decision.reason


def test_too_few_requests_waits():
    assert decide(requests=99).action == "wait"
    assert "99 requests" in decide(requests=99).reason
    assert decide(requests=100).action == "promote"


def test_error_rate_rule_both_directions():
    assert decide(error_rate=0.011).action == "rollback"
    assert "error rate" in decide(error_rate=0.011).reason
    assert decide(error_rate=0.01).action == "promote"
    # Judged against stable's own error rate, not zero.
    worse_stable = canary_decision({**STABLE, "error_rate": 0.05}, {**GOOD, "error_rate": 0.055}, POLICY)
    assert worse_stable.action == "promote"


def test_p95_rule_both_directions():
    assert decide(p95_ms=300.1).action == "rollback"
    assert "p95" in decide(p95_ms=300.1).reason
    assert decide(p95_ms=300.0).action == "promote"
    # A fast service: 1.5x of 20 ms is noise below min_p95_increase_ms, not a regression.
    fast = {**STABLE, "p95_ms": 20.0}
    assert canary_decision(fast, {**GOOD, "p95_ms": 69.0}, POLICY).action == "promote"
    assert canary_decision(fast, {**GOOD, "p95_ms": 70.1}, POLICY).action == "rollback"


def test_kid_rule_both_directions_and_unmeasured():
    assert decide(kid=0.031).action == "rollback"
    assert "KID" in decide(kid=0.031).reason
    assert decide(kid=0.029).action == "promote"
    assert decide(kid=None).action == "promote" and "KID not measured" in decide(kid=None).reason


def test_rules_apply_in_order():
    # Errors are reported before latency and quality.
    assert "error rate" in decide(error_rate=0.5, p95_ms=9999, kid=1.0).reason


@pytest.mark.parametrize("q,expected", [(50, 5), (95, 10), (99, 10), (0, 1)])
def test_percentile_nearest_rank(q, expected):
    assert percentile(list(range(10, 0, -1)), q) == expected


def test_side_stats_from_access_log_records():
    up = {"upstream": "127.0.0.1:8085"}
    records = [{"side": "stable", "status": "200", "request_time": "0.010", **up},
               {"side": "stable", "status": "502", "request_time": "0.030", **up},
               {"side": "canary", "status": "200", "request_time": "0.020", **up},
               {"side": "canary", "status": "401", "request_time": "0.000", "upstream": ""}]  # refused by nginx
    stats = side_stats(records)
    assert stats["stable"]["requests"] == 2 and stats["stable"]["error_rate"] == 0.5
    assert stats["stable"]["p95_ms"] == pytest.approx(30.0) and stats["canary"]["p50_ms"] == pytest.approx(20.0)
    assert side_stats([])["canary"] == {"requests": 0, "errors": 0, "error_rate": None, "p50_ms": None,
                                        "p95_ms": None, "p99_ms": None}


def test_watch_says_a_dead_stable_side_once_and_rolls_back_a_dead_canary(monkeypatch, tmp_path):
    """deploy watch's loop on stand-in health checks: the stable side's outage is one line, not one per check;
    the canary's side down rolls back at once."""
    from productstudio.deploy import local_canary

    health = {"stable": {"running": False, "healthy": False}, "canary": {"running": True, "healthy": True}}
    proxy = type("Proxy", (), {"settings": lambda self: {"percent": 20}})()
    monkeypatch.setattr(local_canary, "_running_proxy", lambda state: proxy)
    monkeypatch.setattr(local_canary, "load_deploy", lambda state: {"stable_version": "1", "canary_version": "2"})
    monkeypatch.setattr(local_canary, "side_health", lambda side_dir: health[Path(side_dir).name])
    said = []
    result = local_canary.watch(tmp_path, every_s=0, failures=3, rounds=4, say=said.append)
    assert result["action"] == "none" and result["down"] == ["stable"]
    assert len(said) == 1 and "stable side v1 down (its TorchServe is not running); 80 % of requests" in said[0]

    health["canary"] = {"running": False, "healthy": False}
    rolled = []
    monkeypatch.setattr(local_canary, "rollback", lambda state, reason: rolled.append(reason) or {"percent": 0})
    result = local_canary.watch(tmp_path, every_s=0, failures=3, rounds=4, say=said.append)
    assert rolled == ["deploy watch: canary side v2 down (its TorchServe is not running)"]
    assert result["action"] == "rollback"
