"""Step 'train-classifier': the product classifier evaluation uses for domain metrics."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step


def run(params, processed: Path, out: Path) -> dict:
    from productstudio.training.classifier import train_classifier

    manifest = train_classifier(processed, out, epochs=params.evaluate.classifier_epochs, seed=params.protocol.seed)
    return {"manifest": manifest, "out": out}


def format(result: dict) -> str:
    return f"product classifier: test accuracy {result['manifest']['test_accuracy']:.4f} -> {result['out']}"


STEP = Step(
    name="train-classifier",
    help="train the product classifier used by evaluation (domain features and accuracy on generated images)",
    description="A small CNN trained for evaluate.classifier_epochs epochs on the processed train split; reports test accuracy.",
    run=run,
    format=format,
    params=("evaluate.classifier_epochs", "protocol.seed"),
    args=(
        Arg("--processed", "processed dataset", paths.PROCESSED),
        Arg("--out", "classifier directory (safetensors + config)", paths.CLASSIFIER),
    ),
)
