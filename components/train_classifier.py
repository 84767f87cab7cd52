"""KFP component: train the product classifier evaluation uses (``productstudio.training.classifier.train_classifier``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def train_classifier(
    params_yaml: str,
    dataset: dsl.Input[dsl.Dataset],
    classifier: dsl.Output[dsl.Model],
):
    """Train the classifier on ``dataset`` (params ``evaluate.classifier_epochs`` and ``evaluate.seed``).

    ``classifier`` holds the weights and a manifest with the test accuracy (also in its metadata).
    """
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.training.classifier import train_classifier as run_train_classifier

    settings = parse_params(yaml.safe_load(params_yaml), "params_yaml").evaluate
    manifest = run_train_classifier(
        Path(dataset.path), Path(classifier.path), epochs=settings.classifier_epochs, seed=settings.seed
    )
    classifier.metadata["test_accuracy"] = manifest["test_accuracy"]
