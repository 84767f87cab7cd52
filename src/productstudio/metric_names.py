"""Metric names, stylegan2-ada style: ``(fid|kid)<count>[k]_(train|test)``, and the reference metrics.

Kept free of torch and numpy so that validating params.yaml (``config.EvaluateSettings``) stays cheap
for every CLI command; ``metrics.engine`` computes the metrics these names describe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from productstudio.errors import ParamsError

SPLITS = ("train", "test")
KNOWN_METRICS = (
    "fid10k_test",
    "kid10k_test",
    "fid2k_test",
    "kid2k_test",
    "kid1k_test",
    "fid10k_train",
    "fid2k_train",
    "kid2k_train",
)
# Images against their references, pair by pair (no count or split in the name: the pairs say it).
REFERENCE_METRICS = ("psnr", "ssim")
_NAME = re.compile(r"^(fid|kid)([1-9][0-9]*)(k?)_([a-z]+)$")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # "fid" or "kid"
    num_generated: int
    split: str

    @property
    def num_real_requested(self) -> int:
        return self.num_generated


def parse_metric(name: str) -> MetricSpec:
    """``fid10k_test`` -> MetricSpec(kind='fid', num_generated=10000, split='test')."""
    match = _NAME.match(name)
    if not match or match.group(4) not in SPLITS:
        raise ParamsError(
            f"unknown metric {name!r}: expected (fid|kid)<count>[k]_(train|test), e.g. {', '.join(KNOWN_METRICS)}"
        )
    kind, digits, thousands, split = match.groups()
    count = int(digits) * (1000 if thousands else 1)
    if count < 2:
        raise ParamsError(f"{name}: {kind.upper()} needs at least 2 samples")
    return MetricSpec(name=name, kind=kind, num_generated=count, split=split)


def metric_name(kind: str, count: int, split: str) -> str:
    """``("kid", 100, "test")`` -> ``kid100_test``: the name of a feature metric at that count."""
    return parse_metric(f"{kind}{count}_{split}").name
