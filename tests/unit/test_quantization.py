"""int8 quantization of a tiny generator: the files, the loader's contract, fidelity to fp32, the report,
pruning, and the interleaved timer."""

import json

import numpy as np
import onnx
import pytest
import torch

from productstudio.config import QuantizeSettings
from productstudio.models.io import load_generator, save_generator
from productstudio.models.gan import GANConfig, Generator
from productstudio.quantization.quantize import INT8_FILE, KIND, load_quantized, quantize
from productstudio.quantization.measure import time_interleaved
from productstudio.quantization.onnx_model import export_onnx, make_session
from productstudio.quantization.prune import prune_generator

CATEGORIES = [f"c{i}" for i in range(4)]
FAST = QuantizeSettings(metrics=[], psnr_samples=40, calibration_samples=64, timing_rounds=1)


def tiny_generator(seed: int = 0, num_classes: int = len(CATEGORIES)) -> Generator:
    """A freshly initialised generator whose batch-norm statistics come from a few batches of its own
    activations (as after training), so eval mode gives images with a realistic spread."""
    torch.manual_seed(seed)
    model = Generator(GANConfig(num_classes=num_classes, latent_dim=8, g_width=4))
    model.train()
    with torch.no_grad():
        for _ in range(20):
            model(torch.randn(32, 8), torch.randint(0, num_classes, (32,)))
    return model.eval()


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantize")
    save_generator(tiny_generator(), root / "generator", categories=CATEGORIES, kind="gan")
    report = quantize(root / "generator", root / "int8", FAST)
    return root, report


def test_writes_an_int8_model_with_its_config_and_manifest(quantized):
    root, report = quantized
    out = root / "int8"
    assert {p.name for p in out.iterdir()} == {INT8_FILE, "generator.fp32.onnx", "config.json", "quantization.json", "manifest.json"}
    # The weights really are int8 (a silent fall-back to fp32 would pass every other check).
    graph = onnx.load(str(out / INT8_FILE)).graph
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == 3, "every convolution's weights should be int8"
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    config = json.loads((out / "config.json").read_text())
    assert config["categories"] == CATEGORIES and config["kind"] == "gan"
    assert config["quantization"]["file"] == INT8_FILE
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == KIND and manifest["int8_sha256"] and manifest["inputs"]["generator_sha256"]
    assert json.loads((out / "quantization.json").read_text()) == json.loads(json.dumps(report))


def test_report_has_speed_size_fidelity_and_target(quantized):
    _, report = quantized
    variants = {"fp32_eager", "fp32_eager_channels_last", "fp32_onnxruntime", "int8_onnxruntime"}
    assert set(report["latency_b1_ms"]) == variants and set(report["throughput_b64_img_s"]) == variants
    assert all(v > 0 for v in report["latency_b1_ms"].values())
    speedup = report["speedup"]["b64_int8_vs_fp32_eager"]
    best_eager = max(report["throughput_b64_img_s"]["fp32_eager"], report["throughput_b64_img_s"]["fp32_eager_channels_last"])
    assert speedup == pytest.approx(report["throughput_b64_img_s"]["int8_onnxruntime"] / best_eager)
    sizes = report["size_bytes"]
    assert sizes["int8_onnx"] < sizes["fp32_onnx"]
    fidelity = report["fidelity"]
    assert fidelity["num_images"] == FAST.psnr_samples and fidelity["seed"] == 1234
    assert 25.0 < fidelity["psnr_db_mean"] < 80.0, "int8 should be close to fp32, but not bit-identical"
    assert fidelity["ssim_mean"] > 0.8
    assert report["quality"] == {"skipped": "quantize.metrics is empty"}
    target = report["target"]
    assert target["speedup_met"] == (speedup >= 1.5) and target["fid_met"] is None and target["met"] is None
    assert report["pruning"]["method"] == "none" and report["pruning"]["zero_fraction"] < 0.01


def test_load_quantized_has_the_generator_contract(quantized):
    root, _ = quantized
    model = load_quantized(root / "int8", threads=1)
    reference, _ = load_generator(root / "generator")
    assert model.config == reference.config and model.info["categories"] == CATEGORIES
    for batch in (1, 5):
        z, y = torch.randn(batch, 8), torch.arange(batch) % len(CATEGORIES)
        images = model(z, y)
        assert images.shape == (batch, 1, 28, 28) and images.dtype == torch.float32
        assert images.min() >= -1.0 and images.max() <= 1.0
        with torch.inference_mode():
            expected = reference(z, y)
        mse = float(((images - expected) ** 2).mean())
        assert 10 * np.log10(4.0 / mse) > 25.0
    with pytest.raises(ValueError, match="expected z"):
        model(torch.randn(2, 7), torch.arange(2))


def test_quantize_never_replaces_a_directory_it_did_not_make(quantized, tmp_path):
    root, _ = quantized
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match="refusing to replace"):
        quantize(root / "generator", tmp_path, FAST)
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_the_model_loader_dispatches_on_the_saved_kind(quantized):
    from productstudio.models.loader import INT8_ONNX, load, model_kind
    from productstudio.models.onnx_generator import OnnxGenerator

    root, _ = quantized
    fp32, info = load(root / "generator")
    int8, int8_info = load(root / "int8", threads=1)
    assert isinstance(fp32, Generator) and model_kind(info) == "gan"
    assert isinstance(int8, OnnxGenerator) and model_kind(int8_info) == INT8_ONNX and int8.config == fp32.config


def test_load_quantized_refuses_a_directory_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a quantized generator"):
        load_quantized(tmp_path)


def test_onnx_export_matches_the_module_at_any_batch(tmp_path):
    model = tiny_generator(seed=1)
    path = export_onnx(model, tmp_path / "g.onnx")
    session = make_session(path, threads=1)
    z, y = torch.randn(7, 8), torch.tensor([0, 1, 2, 3, 3, 2, 1])
    with torch.inference_mode():
        expected = model(z, y).numpy()
    np.testing.assert_allclose(session.run(None, {"z": z.numpy(), "y": y.numpy()})[0], expected, atol=1e-5)


def test_pruning_is_permanent_and_leaves_the_original_alone():
    model = tiny_generator()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, summary = prune_generator(model, "l1_unstructured", 0.5)
    assert summary["method"] == "l1_unstructured"
    assert 0.45 < summary["zero_fraction"] < 0.55
    assert set(pruned.state_dict()) == set(before), "no weight_orig/weight_mask left behind"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not pruned.blocks[0].conv._forward_pre_hooks

    structured, summary = prune_generator(model, "ln_structured", 0.5)
    weight = structured.blocks[0].conv.weight
    zero_channels = int((weight.flatten(1).abs().sum(dim=1) == 0).sum())
    assert zero_channels == weight.shape[0] // 2
    assert structured.to_image.weight.ne(0).all(), "the output layer is kept whole"


def test_interleaved_timer_ranks_fast_and_slow():
    """A fake clock that only the timed functions advance: the medians are exact, whatever the machine's load."""
    now = [0.0]
    calls = []

    def takes(name, seconds):
        def fn():
            calls.append(name)
            now[0] += seconds
        return fn

    times = time_interleaved({"fast": takes("fast", 0.004), "slow": takes("slow", 0.04)}, rounds=3, min_seconds=0.01,
                             clock=lambda: now[0])
    assert times == {"fast": pytest.approx(0.004), "slow": pytest.approx(0.04)}
    # warm-up and one probe each; then 3 calls of fast (0.01 s / 0.004 s) to 1 of slow, in alternating order
    rounds = ["fast"] * 3 + ["slow"] + ["slow"] + ["fast"] * 3 + ["fast"] * 3 + ["slow"]
    assert calls == ["fast", "fast", "slow", "slow", *rounds]


def test_settings_reject_pruning_without_an_amount():
    from productstudio.config import ParamsError, parse_params

    with pytest.raises(ParamsError, match="prune_amount"):
        parse_params({"quantize": {"prune": "ln_structured"}})
    with pytest.raises(ParamsError, match="quantize.metrics"):
        parse_params({"quantize": {"metrics": ["fid500"]}})


def test_quality_inputs_are_the_evaluate_steps_generated_set():
    """fp32 vs int8 is judged on evaluate's latents: the fp32 side equals generated_batches' images."""
    from productstudio.imaging import to_uint8_array
    from productstudio.models.sampling import generated_batches
    from productstudio.quantization.measure import paired_outputs

    model = tiny_generator()
    ours = to_uint8_array(paired_outputs({"fp32": model}, model.config, 30, seed=1234, batch_size=8)["fp32"])
    theirs = np.concatenate(list(generated_batches(model, 30, 1234, 8, "cpu")))
    np.testing.assert_array_equal(ours, theirs)
