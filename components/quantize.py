"""KFP component: int8 generator for CPU serving, with its measured cost and benefit (``productstudio.quantization.quantize.quantize``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def quantize(
    params_yaml: str,
    model: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    stats: dsl.Input[dsl.Artifact],
    quantized: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
):
    """Quantize ``model``'s generator to int8 (params ``quantize`` section) into ``quantized``.

    ``quantized`` holds generator.int8.onnx (what ``productstudio.models.loader.load`` serves),
    generator.fp32.onnx, config.json, quantization.json (speed at batch 1 and 64, sizes, PSNR and FID/KID
    of fp32 vs int8 on the same seeds) and manifest.json; ``metrics`` has the flat numbers for the KFP UI.
    FID/KID use the real features cached in ``stats`` for ``dataset``.
    """
    import math
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.quantization.quantize import flat_metrics
    from productstudio.steps import quantize as step

    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    report = step.run(params, generator=Path(model.path) / "generator", processed=Path(dataset.path),
                      cache=Path(stats.path), out=Path(quantized.path), metrics=None)
    print(step.format(report))
    for name, value in flat_metrics(report).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            metrics.log_metric(name, value)
    quantized.metadata["format"] = "onnx-qdq-int8"
    quantized.metadata["file"] = "generator.int8.onnx"
    quantized.metadata["target_met"] = report["target"]["met"]
