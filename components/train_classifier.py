"""KFP component: train the product classifier evaluation uses (``productstudio.training.classifier.train_classifier``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def train_classifier(
    params_yaml: str,
    dataset: dsl.Input[dsl.Dataset],
    classifier: dsl.Output[dsl.Model],
):
    """Train the classifier on ``dataset`` (params ``evaluate.classifier_epochs`` and ``protocol.seed``).

    ``classifier`` holds the weights and a manifest with the test accuracy (also in its metadata).
    """
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.steps import train_classifier as step

    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    result = step.run(params, processed=Path(dataset.path), out=Path(classifier.path))
    print(step.format(result))
    classifier.metadata["test_accuracy"] = result["manifest"]["test_accuracy"]
