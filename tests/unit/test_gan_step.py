"""One GAN training step on a tiny model: the conditioning ramp and the mode-seeking pairs reach the networks."""

import pytest
import torch

from productstudio.config import TrainSettings
from productstudio.training import loop


def _step(settings: TrainSettings, step: int) -> tuple[loop.TrainState, list[torch.Tensor]]:
    state = loop.build(settings, num_classes=3, shape=(1, 28, 28), device=torch.device("cpu"))
    state.step = step
    categories = []
    state.modules["generator"].register_forward_hook(lambda module, args, out: categories.append(args[1].clone()))
    x, y = torch.rand(settings.batch_size, 1, 28, 28) * 2 - 1, torch.randint(0, 3, (settings.batch_size,))
    losses = loop.gan_step(state, x, y, settings, torch.device("cpu"))
    assert set(losses) == {"loss_d", "loss_g"} and all(torch.isfinite(torch.tensor(list(losses.values()))))
    return state, categories


@pytest.mark.parametrize("step, strength", [(5, 0.0), (20, 0.5), (40, 1.0)])
def test_the_conditioning_ramp_sets_every_network_at_each_step(step, strength):
    settings = TrainSettings(g_width=4, d_width=4, latent_dim=8, batch_size=8, max_steps=50, condition_ramp=(10, 30))
    state, _ = _step(settings, step)
    assert [state.modules[k].condition_strength for k in ("generator", "discriminator", "ema")] == [strength] * 3


def test_mode_seeking_draws_pairs_of_one_category_and_only_when_asked():
    settings = TrainSettings(g_width=4, d_width=4, latent_dim=8, batch_size=9, mode_seeking=1.0, loss="hinge")
    _, [categories] = _step(settings, 0)
    assert torch.equal(categories[:4], categories[4:8])  # the odd one out stays unpaired
    _, [plain] = _step(settings.model_copy(update={"mode_seeking": 0.0}), 0)
    assert not torch.equal(plain[:4], plain[4:8])  # same seed: without the term the draw is left as it was
    assert torch.equal(plain[:4], categories[:4]) and torch.equal(plain[8:], categories[8:])


def test_mode_seeking_loss_punishes_alike_pairs_and_its_gradient_pulls_them_apart():
    torch.manual_seed(0)
    z = torch.randn(8, 8)
    different = torch.cat([torch.full((4, 1, 4, 4), -0.5), torch.full((4, 1, 4, 4), 0.5)])
    assert loop.mode_seeking_loss(0.01 * torch.randn(8, 1, 4, 4), z) > 10 * loop.mode_seeking_loss(different, z)
    images = (torch.randn(8, 1, 4, 4) * 0.1).requires_grad_()
    loss = loop.mode_seeking_loss(images, z)
    loss.backward()
    with torch.no_grad():
        stepped = images - 0.01 * images.grad
    gap = lambda t: (t[:4] - t[4:]).abs().mean()
    assert gap(stepped) > gap(images.detach()) and loop.mode_seeking_loss(stepped, z) < loss


def test_pooled_mode_seeking_does_not_count_a_speckle_as_variety():
    """Two images of one pair alike but for a +-0.5 checkerboard: far apart pixel by pixel, alike once pooled, so
    the pooled term punishes the pair (and a real difference in layout still counts)."""
    z = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    base = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    checker = 0.5 * (torch.arange(8)[:, None] + torch.arange(8)[None]).remainder(2).mul(2).sub(1).float()
    speckled = torch.cat([base + checker, base - checker])
    assert loop.mode_seeking_loss(speckled, z, pool=2) > 10 * loop.mode_seeking_loss(speckled, z)
    layout = torch.cat([base, base.flip(-1)])  # mirrored: a different arrangement, not a speckle
    assert loop.mode_seeking_loss(layout, z, pool=2) < loop.mode_seeking_loss(speckled, z, pool=2) / 5


def test_r1_penalty_is_the_squared_input_gradient_of_the_discriminator():
    weight = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(2))
    real = torch.rand(5, 3, 4, 4, requires_grad=True)
    logits = (real * weight).flatten(1).sum(1) + (real**2).flatten(1).sum(1)  # d/dx = weight + 2x
    expected = (weight + 2 * real.detach()).pow(2).flatten(1).sum(1).mean()
    assert torch.allclose(loop.r1_penalty(logits, real), expected)


@pytest.mark.parametrize("penalty", ["r1_gamma", "r2_gamma"])  # R1 at the real images, R2 at the generated ones
@pytest.mark.parametrize("step, changed", [(0, True), (1, False), (4, True)])
def test_lazy_r1_and_r2_change_the_discriminator_update_only_on_their_steps(penalty, step, changed):
    plain = TrainSettings(g_width=4, d_width=4, latent_dim=8, batch_size=8, r1_gamma=0.0, r2_gamma=0.0)
    penalised = plain.model_copy(update={penalty: 10.0, "r1_every": 4})
    weights = []
    for settings in (plain, penalised):
        torch.manual_seed(0)  # same initial weights
        state, _ = _step(settings, step)
        weights.append(torch.cat([p.detach().flatten() for p in state.modules["discriminator"].parameters()]))
    assert (not torch.equal(*weights)) is changed


def test_balanced_draws_show_every_category_equally_often_and_uniform_draws_follow_the_catalogue():
    labels = torch.tensor([0] * 700 + [1] * 100 + [2] * 200)  # as uneven as t-shirts against skirts
    rng = torch.Generator().manual_seed(0)
    balanced = torch.bincount(labels[loop.real_draw(labels, 4, True)(30_000, rng)], minlength=4) / 30_000
    uniform = torch.bincount(labels[loop.real_draw(labels, 4, False)(30_000, rng)], minlength=4) / 30_000
    # 30,000 draws: a share's standard error is under 0.003, so 0.02 is over six of them
    assert torch.allclose(balanced[:3], torch.full((3,), 1 / 3), atol=0.02) and balanced[3] == 0  # none to draw
    assert torch.allclose(uniform, torch.tensor([0.7, 0.1, 0.2, 0.0]), atol=0.02)
    # every photo of a category is as likely as the others of it: all 100 of the rare one come up
    assert len(set(loop.real_draw(labels, 4, True)(30_000, rng).tolist()) & set(range(700, 800))) == 100


def test_relativistic_losses_judge_each_real_against_its_fake():
    from productstudio.models.gan import relativistic_d_loss, relativistic_g_loss

    real, fake = torch.tensor([3.0, 0.0]), torch.tensor([-3.0, 0.0])
    # a shift shared by every logit changes nothing: only the pairs' differences count
    assert torch.allclose(relativistic_d_loss(real + 5, fake + 5), relativistic_d_loss(real, fake))
    assert relativistic_d_loss(real, fake) < relativistic_d_loss(fake, real)  # reals above their fakes: low loss
    assert torch.allclose(relativistic_g_loss(real, fake), relativistic_d_loss(fake, real))  # the mirror image
    fake_logits = fake.clone().requires_grad_()
    relativistic_g_loss(real, fake_logits).backward()
    assert (fake_logits.grad < 0).all()  # descending it raises the fakes' logits


def test_relativistic_fakes_take_the_real_batch_categories():
    settings = TrainSettings(g_width=4, d_width=4, latent_dim=8, batch_size=8, loss="relativistic")
    state = loop.build(settings, num_classes=3, shape=(1, 28, 28), device=torch.device("cpu"))
    seen = []
    state.modules["generator"].register_forward_hook(lambda module, args, out: seen.append(args[1].clone()))
    x, y = torch.rand(8, 1, 28, 28) * 2 - 1, torch.tensor([0, 1, 2, 2, 1, 0, 0, 1])
    losses = loop.gan_step(state, x, y, settings, torch.device("cpu"))
    assert torch.equal(seen[0], y) and all(torch.isfinite(torch.tensor(list(losses.values()))))
    with pytest.raises(ValueError, match="set mode_seeking: 0"):
        TrainSettings(**{**settings.model_dump(), "mode_seeking": 1.0})
