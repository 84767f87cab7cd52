"""The model loader's kinds, the one image conversion, and the sampling module's latents."""

import json

import numpy as np
import pytest
import torch

from productstudio.errors import MissingInput
from productstudio.imaging import decode, encode, to_float, to_uint8, to_uint8_array
from productstudio.models.cvae import Encoder
from productstudio.models.gan import GANConfig, Generator
from productstudio.models.io import load_encoder, save_generator
from productstudio.models.loader import LOADERS, load, model_kind
from productstudio.models.sampling import example_inputs, generated_batches, latent_batches, latents_from_seeds

CONFIG = GANConfig(num_classes=3, g_width=8, latent_dim=16)


def test_new_configs_name_their_kind_and_old_ones_are_inferred(tmp_path):
    torch.manual_seed(0)
    save_generator(Generator(CONFIG), tmp_path / "gan")
    save_generator(Generator(CONFIG), tmp_path / "cvae", encoder=Encoder(CONFIG))
    assert json.loads((tmp_path / "gan/config.json").read_text())["kind"] == "gan"
    assert json.loads((tmp_path / "cvae/config.json").read_text())["kind"] == "cvae"
    for name, kind in (("gan", "gan"), ("cvae", "cvae")):
        path = tmp_path / name / "config.json"
        old = {k: v for k, v in json.loads(path.read_text()).items() if k != "kind"}  # saved before kinds
        path.write_text(json.dumps(old))
        model, info = load(tmp_path / name)
        assert model_kind(info) == kind and isinstance(model, Generator) and not model.training
    assert load_encoder(tmp_path / "cvae") is not None and load_encoder(tmp_path / "gan") is None
    assert model_kind({"kind": "gan", "quantization": {"file": "generator.int8.onnx"}}) == "int8-onnx"
    assert {"gan", "cvae", "int8-onnx"} <= set(LOADERS)


def test_loading_nothing_is_a_user_error(tmp_path):
    with pytest.raises(MissingInput, match="no config.json"):
        load(tmp_path)


def test_uint8_conversion_matches_every_former_copy():
    x = torch.cat([torch.linspace(-1.2, 1.2, 10001), torch.tensor([-1.0, 1.0, 0.0, -0.996078431, 0.00392157])])
    expected = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # evaluate, quantize, registry, training
    assert torch.equal(to_uint8(x), expected)
    assert torch.equal(to_uint8(x), ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))  # serving's encoder
    assert np.array_equal(to_uint8_array(x), expected.numpy())
    pixels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_float(pixels), pixels.float().div(127.5).sub(1.0)) and torch.equal(to_uint8(to_float(pixels)), pixels)


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_encode_decode_round_trip(fmt):
    grey = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(1, 6, 4)
    rgb = np.random.default_rng(0).integers(0, 256, (3, 5, 7), dtype=np.uint8)
    assert np.array_equal(decode(encode(grey, "png")), grey)
    assert np.array_equal(decode(encode(rgb, fmt)), rgb)


def test_latent_streams_and_per_image_seeds():
    first = torch.cat([z for z, _ in latent_batches(CONFIG, 20, seed=5, batch_size=20)])
    z, y = example_inputs(CONFIG, 20, seed=5)
    assert torch.equal(first, z) and y.tolist() == [i % 3 for i in range(20)]
    per_image = latents_from_seeds([7, 8], 16)
    assert torch.equal(per_image[1], latents_from_seeds([8], 16)[0])
    torch.manual_seed(0)
    model = Generator(CONFIG).eval()
    a = np.concatenate(list(generated_batches(model, 12, 3, 12, "cpu")))
    assert a.shape == (12, 1, 28, 28) and a.dtype == np.uint8


def test_residual_generator_saves_loads_and_exports_like_the_plain_one(tmp_path):
    from productstudio.models.gan import ResidualUpBlock, UpBlock
    from productstudio.quantization.onnx_model import export_onnx

    torch.manual_seed(0)
    plain, residual = Generator(CONFIG), Generator(GANConfig(num_classes=3, g_width=8, latent_dim=16, g_block="residual"))
    assert all(isinstance(b, UpBlock) for b in plain.blocks) and all(isinstance(b, ResidualUpBlock) for b in residual.blocks)
    convs = lambda model: sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())  # noqa: E731
    assert convs(residual) == 3 * len(residual.blocks) + 1 and convs(plain) == len(plain.blocks) + 1
    residual.train()(torch.randn(32, 16), torch.randint(0, 3, (32,)))  # batch-norm statistics of its own
    residual.eval()
    z, y = torch.randn(4, 16), torch.tensor([0, 1, 2, 0])
    images = residual(z, y)
    assert images.shape == (4, 1, 28, 28) and images.abs().max() <= 1 and images.std() > 0.01
    save_generator(residual, tmp_path / "gen")
    loaded, info = load(tmp_path / "gen")
    assert info["model"]["g_block"] == "residual" and torch.equal(loaded(z, y), images)
    export_onnx(loaded, tmp_path / "gen.onnx")  # checks the ONNX graph against the module itself
    with pytest.raises(ValueError, match="choose conv or residual"):
        Generator(GANConfig(g_block="dense"))


def test_condition_strength_zero_ignores_the_category_and_one_is_the_trained_model():
    from productstudio.config import TrainSettings
    from productstudio.models.gan import Discriminator
    from productstudio.training.loop import condition_strength

    torch.manual_seed(0)
    generator, discriminator = Generator(CONFIG).eval(), Discriminator(CONFIG).eval()  # eval: no power iteration
    for module in generator.modules():  # categories that really differ (initialised, every gain is 1 and bias 0)
        if isinstance(module, torch.nn.Embedding):
            torch.nn.init.normal_(module.weight)
    z, x = torch.randn(2, 16).repeat(3, 1), torch.randn(6, 1, 28, 28)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    conditional, conditional_d = generator(z, y), discriminator(x, y)
    assert not torch.allclose(conditional[0], conditional[2])
    assert not torch.allclose(conditional_d, discriminator(x, torch.zeros_like(y)))  # so the check at 0 below can fail
    generator.condition_strength = discriminator.condition_strength = 0.0
    unconditional = generator(z, y)
    assert torch.allclose(unconditional[0], unconditional[2]) and torch.allclose(unconditional[1], unconditional[5])
    assert torch.allclose(discriminator(x, y), discriminator(x, torch.zeros_like(y)))
    generator.condition_strength = discriminator.condition_strength = 1.0
    assert torch.equal(generator(z, y), conditional) and torch.equal(discriminator(x, y), conditional_d)

    ramp = TrainSettings(max_steps=100, condition_ramp=(10, 30))
    assert [condition_strength(s, ramp) for s in (0, 10, 20, 30, 99)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert condition_strength(0, TrainSettings()) == 1.0
    with pytest.raises(ValueError, match="end < max_steps"):
        TrainSettings(max_steps=100, condition_ramp=(10, 100))
