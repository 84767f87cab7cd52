"""The champion/challenger policy on plain dicts: each rule in both directions, and the one-line reason."""

import pytest

from productstudio.config import PromoteSettings, load_params
from productstudio.promotion.policy import decide
from tests.conftest import REPO_ROOT

POLICY = {"metric": "fid1k_test", "z": 2.0, "min_margin": 1.0, "category_tolerance": 0.10,
          "max_int8_fid_increase": 0.10, "max_fid": 150.0}
PROTOCOL = {"metric": "fid1k_test", "latent_seed": 1234, "num_generated": 1000, "num_real": 1000, "data_version": "abc"}


def report(fid, std=1.0, cats=None, int8=None, **protocol):
    return {"metric": "fid1k_test", "fid": fid, "fid_std": std, "per_category": cats or {"Shirt": 100.0, "Bag": 50.0},
            "int8": {"fid": int8} if int8 is not None else None, "protocol": {**PROTOCOL, **protocol}}


def rule(decision, name):
    (found,) = [r for r in decision.rules if r.name == name]
    return found


def test_better_challenger_is_promoted():
    decision = decide(report(120.0), report(130.0), POLICY)
    assert decision.promoted and not decision.first_model
    assert decision.reason.startswith("promoted: fid1k_test 120.00 vs champion's 130.00: gain 10.00")
    assert "\n" not in decision.reason
    margin = rule(decision, "fid_margin").evidence
    assert margin["uncertainty"] == pytest.approx(2 ** 0.5) and margin["required"] == pytest.approx(2 * 2 ** 0.5)


def test_worse_challenger_is_refused_with_the_numbers():
    decision = decide(report(135.0), report(130.0), POLICY)
    assert not decision.promoted
    assert decision.reason.startswith("refused by fid_margin: fid1k_test 135.00 vs champion's 130.00: gain -5.00, needs more than 2.83")


def test_a_gain_within_the_uncertainty_is_refused():
    # 4 FID points better, but each FID is uncertain by +-3: the difference is within z * 4.24.
    decision = decide(report(126.0, std=3.0), report(130.0, std=3.0), POLICY)
    assert not decision.promoted and rule(decision, "fid_margin").evidence["required"] == pytest.approx(2 * 18 ** 0.5)
    # The same gain with precise measurements clears it, and min_margin still applies when z * std is tiny.
    assert decide(report(126.0, std=0.1), report(130.0, std=0.1), POLICY).promoted
    assert not decide(report(129.5, std=0.0), report(130.0, std=0.0), POLICY).promoted
    assert decide(report(129.5, std=0.0), report(130.0, std=0.0), {**POLICY, "min_margin": 0.4}).promoted


def test_a_category_regression_beyond_tolerance_is_refused():
    champion = report(130.0, cats={"Shirt": 100.0, "Bag": 50.0})
    better_overall_worse_bags = report(110.0, cats={"Shirt": 80.0, "Bag": 56.0})  # Bag +12 %
    decision = decide(better_overall_worse_bags, champion, POLICY)
    assert not decision.promoted
    assert decision.reason == "refused by categories: worst category Bag: FID 50.00 -> 56.00 (+12.0 %, tolerance +10.0 %)"
    assert decide(report(110.0, cats={"Shirt": 80.0, "Bag": 54.0}), champion, POLICY).promoted  # +8 % is tolerated


def test_int8_quality_cost_is_bounded():
    champion = report(130.0)
    assert decide(report(110.0, int8=120.0), champion, POLICY).promoted  # +9.1 %
    decision = decide(report(110.0, int8=125.0), champion, POLICY)  # +13.6 %
    assert not decision.promoted
    assert decision.reason == "refused by int8: int8 FID 125.00 vs fp32 110.00 (+13.6 %, bound +10.0 %)"
    assert rule(decide(report(110.0), champion, POLICY), "int8").message == "no int8 variant"


def test_first_model_needs_the_quality_floor():
    first = decide(report(140.0), None, POLICY)
    assert first.promoted and first.first_model
    assert first.reason == "promoted as the first champion: fid1k_test 140.00 within the floor 150.00"
    refused = decide(report(163.5), None, POLICY)
    assert not refused.promoted
    assert refused.reason == "refused by quality_floor: fid1k_test 163.50 is 13.50 above the floor 150.00"
    both = decide(report(163.5, int8=200.0), None, POLICY)
    assert both.reason.endswith("(also failed: int8)")


def test_reports_measured_differently_are_not_compared():
    decision = decide(report(100.0, latent_seed=1), report(130.0), POLICY)
    assert not decision.promoted
    assert decision.reason == "refused by protocol: measured differently (latent_seed: 1 vs champion's 1234)"
    assert [r.name for r in decision.rules] == ["protocol", "int8"]


def test_decision_is_json_able_and_policy_comes_from_params():
    import json

    decision = decide(report(120.0), report(130.0), PromoteSettings())
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["promoted"] is True and [r["name"] for r in data["rules"]] == ["protocol", "fid_margin", "categories", "int8"]
    assert load_params(REPO_ROOT / "params.yaml").promote == PromoteSettings()
    with pytest.raises(ValueError, match="lacks z"):
        decide(report(1.0), None, {k: v for k, v in POLICY.items() if k != "z"})


def test_retrain_workflow_runs_on_data_or_params_changes_and_on_a_schedule():
    import yaml

    workflow = yaml.safe_load((REPO_ROOT / ".github/workflows/retrain.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads the key `on` as True
    assert set(triggers["push"]["paths"]) == {"**.dvc", "dvc.lock", "params.yaml"}
    assert triggers["schedule"][0]["cron"].count(" ") == 4
    steps = [step.get("run", "") for step in workflow["jobs"]["retrain"]["steps"]]
    assert "make install" in steps and any("productstudio retrain --if-changed" in run for run in steps)
