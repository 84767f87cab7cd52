"""Promoting a learned editor: its 'challenger' judged against its 'champion' by ``editor_policy``.

    result = promote_editor("restorer", params.edit.promote)

The evidence of both versions is the evaluation table's, stored on each version when it was registered
(``registry.editor_registry``); nothing is re-measured here, and the protocol rule refuses to compare
tables measured differently. A promotion moves 'champion'; either way the challenger is tagged with the
decision and its one-line reason.
"""

from __future__ import annotations

import json

from productstudio import tracking
from productstudio.promotion.editor_policy import decide_editor
from productstudio.registry.editor_registry import EDITORS, EVIDENCE_TAG
from productstudio.registry.model_registry import CHALLENGER, CHAMPION, client, version_with_alias


def promote_editor(kind: str, settings) -> dict:
    name = EDITORS[kind].model_name
    mlflow_client = client()
    with tracking.server_calls(f"promoting '{name}'", "'champion' is moved last, in one call"):
        challenger = version_with_alias(mlflow_client, name, CHALLENGER)
        if challenger is None:
            from productstudio.errors import MissingInput

            raise MissingInput(f"'{name}' has no challenger; register one with 'productstudio edit register'")
        champion = version_with_alias(mlflow_client, name, CHAMPION)
        if champion is not None and champion.version == challenger.version:
            return {"model": name, "challenger": str(challenger.version), "champion_before": str(champion.version),
                    "champion_after": str(champion.version), "promoted": False,
                    "reason": "the challenger is already the champion", "rules": []}
        decision = decide_editor(kind, json.loads(challenger.tags[EVIDENCE_TAG]),
                                 json.loads(champion.tags[EVIDENCE_TAG]) if champion is not None else None, settings)
        mlflow_client.set_model_version_tag(name, challenger.version, "promotion.decision",
                                            "promoted" if decision.promoted else "refused")
        mlflow_client.set_model_version_tag(name, challenger.version, "promotion.reason", decision.reason[:5000])
        if decision.promoted:
            mlflow_client.set_registered_model_alias(name, CHAMPION, str(challenger.version))
    after = challenger.version if decision.promoted else (champion.version if champion is not None else None)
    return {"model": name, "challenger": str(challenger.version),
            "champion_before": str(champion.version) if champion is not None else None,
            "champion_after": str(after) if after is not None else None, **decision.to_dict()}
