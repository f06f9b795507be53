"""Distillation merge (DMM, MATH §5): the style student, the losses, incremental merging, mixing.

Teachers are exact Gaussian score models, so "the student reproduces teacher i" is measured
against the true scores. Thresholds come from measured runs (seed 0): after 600 steps each style's
σ²-weighted score error to its own teacher is ~0.002 and ~3.7 to the other teacher; adding a third
teacher for 300 steps without the regulariser moves the old styles' error to ~1, with it ~0.004.
"""

from __future__ import annotations

import copy

import pytest
import torch

from molfuse.convert import score_fn
from molfuse.fusion import Distillation, FeatureTap, x0_from_score
from molfuse.models import GaussianMixture
from molfuse.nets import build
from molfuse.nets.discriminators import CloudDiscriminator, FlatDiscriminator
from molfuse.nets.style import StyledNet, style_weights
from molfuse.schedules import VPSchedule

SCH = VPSchedule()
BASE = {"name": "mlp", "config": {"dim": 2, "hidden": 64, "depth": 3}}
TEACHERS = [GaussianMixture([[2.0, 0.0]], [0.3]), GaussianMixture([[-2.0, 0.0]], [0.3]),
            GaussianMixture([[0.0, 2.0]], [0.3])]


def student(n: int) -> StyledNet:
    s = build("style_student", {"base": BASE, "num_styles": n})
    s.prediction = "eps"
    return s


def score_error(net, teacher, style, n=512, seed=1) -> float:
    """E σ_t² ‖s_student(x, t, style) − s_teacher(x, t)‖² over broad x and t in [0.05, 0.95]."""
    g = torch.Generator().manual_seed(seed)
    x, t = torch.randn(n, 2, generator=g) * 2, torch.rand(n, generator=g) * 0.9 + 0.05
    with torch.no_grad():
        a = score_fn(net, SCH)(x, t, style)
        b = score_fn(teacher, SCH)(x.double(), t.double()).float()
    return float(((SCH.sigma(t)[:, None] * (a - b)) ** 2).sum(1).mean())


def fit(net, objective, steps, seed=0, lr=3e-3):
    opt = torch.optim.Adam(list(net.parameters()) + list(objective.parameters()), lr=lr)
    for k in range(steps):
        g = torch.Generator().manual_seed(seed * 100_000 + k)
        loss, extra = objective(net, {"x": torch.randn(256, 2, generator=g) * 2}, g)
        (loss.mean() + sum(extra.values(), torch.zeros(()))).backward()
        opt.step()
        opt.zero_grad()
    return net


@pytest.fixture(scope="module")
def two_style_student():
    torch.manual_seed(0)
    return fit(student(2), Distillation(TEACHERS[:2], SCH, 2), 600)


# ------------------------------------------------------------------ the style student
def test_a_fresh_student_is_its_base_net_for_every_style():
    torch.manual_seed(0)
    s = student(3)
    x, t = torch.randn(5, 2), torch.rand(5)
    for style in (0, 2, torch.tensor([0, 1, 2, 0, 1]), torch.tensor([0.2, 0.3, 0.5])):
        assert torch.equal(s(x, t, cond=style), s.net(x, t))


def test_styles_shift_the_time_embedding_and_mixing_mixes_codes():
    torch.manual_seed(0)
    s = student(3)
    with torch.no_grad():
        s.style_mlp[-1].weight.normal_()
        for p in s.net.parameters():  # the MLP's output layer starts at zero
            p.add_(0.1 * torch.randn_like(p))
    x, t = torch.randn(4, 2), torch.rand(4)
    assert not torch.allclose(s(x, t, cond=0), s(x, t, cond=1))
    w = torch.tensor([0.2, 0.3, 0.5])
    assert torch.allclose(s.shift(w[None]), s.style_mlp(w @ s.codebook.weight)[None])
    assert torch.allclose(s(x, t, cond=torch.tensor([0.0, 1.0, 0.0])), s(x, t, cond=1), atol=1e-6)


@pytest.mark.parametrize("style, msg", [
    (None, "needs a style"), (3, "each in 0..2"), (torch.tensor([0, 1]), r"\(batch,\) = \(4,\)"),
    (torch.tensor([0.5, 0.6, 0.0]), "sum to 1"), (torch.tensor([0.5, 0.5]), r"\(3,\) or \(batch, 3\)"),
    (torch.tensor([float("nan"), 0.5, 0.5]), "finite")])
def test_bad_styles_are_refused(style, msg):
    with pytest.raises(ValueError, match=msg):
        style_weights(style, 3, 4, torch.zeros(1))


def test_copies_and_growth_keep_their_own_hooks():
    torch.manual_seed(0)
    s = student(2)
    with torch.no_grad():
        s.style_mlp[-1].bias.normal_()
        for p in s.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, t = torch.randn(4, 2), torch.rand(4)
    c = copy.deepcopy(s)
    with torch.no_grad():
        c.style_mlp[-1].bias.add_(1.0)  # the copy's hook must read the copy's shift
    assert not torch.allclose(c(x, t, cond=0), s(x, t, cond=0))
    g = s.grow(2, seed=1)
    assert g.num_styles == 4 and g.architecture["config"]["num_styles"] == 4
    assert torch.equal(g(x, t, cond=1), s(x, t, cond=1)) and s.num_styles == 2
    rebuilt = build("style_student", g.architecture["config"])
    rebuilt.load_state_dict(g.state_dict(), strict=True)  # the card's config rebuilds the grown student
    assert torch.equal(rebuilt(x, t, cond=3), g(x, t, cond=3))


def test_a_net_without_a_time_embedding_is_refused():
    with pytest.raises(ValueError, match="embed_at"):
        StyledNet(torch.nn.Linear(2, 2), 2, base={"name": "x"})
    with pytest.raises(ValueError, match="no such submodule"):
        StyledNet(build(BASE["name"], BASE["config"]), 2, embed_at="nope")


# ------------------------------------------------------------------ losses
def test_a_student_that_equals_its_teacher_has_zero_loss_and_features():
    torch.manual_seed(0)
    teacher = build(BASE["name"], BASE["config"])
    teacher.prediction = "eps"
    with torch.no_grad():
        for p in teacher.parameters():  # the MLP's output layer starts at zero
            p.add_(0.1 * torch.randn_like(p))
    s = student(1)
    s.net.load_state_dict(teacher.state_dict())
    obj = Distillation([teacher], SCH, 1, feature_layers=["time_emb", "blocks.1"], feature_weight=1.0)
    g = torch.Generator().manual_seed(0)
    loss, extra = obj(s, {"x": torch.randn(32, 2)}, g)
    assert loss.shape == (32,) and float(loss.abs().max()) == 0.0 and float(extra["feature"]) == 0.0
    with torch.no_grad():
        s.net.time_emb.mlp[0].weight.add_(0.1)
    loss, extra = obj(s, {"x": torch.randn(32, 2)}, torch.Generator().manual_seed(0))
    assert float(loss.mean()) > 0 and float(extra["feature"]) > 0


def test_feature_imitation_names_bad_layers():
    teacher = build(BASE["name"], BASE["config"])
    teacher.prediction = "eps"
    with pytest.raises(ValueError, match="no such submodule"):
        Distillation([teacher], SCH, 1, feature_layers=["nope"], feature_weight=1.0)(
            student(1), {"x": torch.randn(4, 2)}, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="needs feature_layers"):
        Distillation([teacher], SCH, 1, feature_weight=1.0)


def test_feature_tap_records_and_removes_its_hooks():
    net = build(BASE["name"], BASE["config"])
    with FeatureTap(net, ["time_emb"]) as tap:
        net(torch.randn(3, 2), torch.rand(3))
    assert tap.features["time_emb"].shape[0] == 3 and not net.time_emb._forward_hooks


def test_adversarial_terms_train_the_discriminator_and_the_student_apart():
    torch.manual_seed(0)
    s = student(2)
    d = FlatDiscriminator([2], 4, hidden=16)
    obj = Distillation(TEACHERS[:2], SCH, 2, adversarial_weight=0.5, discriminator=d)
    _, extra = obj(s, {"x": torch.randn(64, 2)}, torch.Generator().manual_seed(0))
    assert set(extra) == {"adversarial", "discriminator"}
    extra["discriminator"].backward(retain_graph=True)
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in s.parameters())  # x̂0 detached
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in d.parameters())
    d.zero_grad()
    extra["adversarial"].backward()
    assert all(p.grad is None for p in d.parameters())  # D's parameters detached in the student's term
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in s.parameters())
    with pytest.raises(ValueError, match="needs a discriminator"):
        Distillation(TEACHERS[:2], SCH, 2, adversarial_weight=0.5)


def test_the_cloud_discriminator_is_invariant():
    torch.manual_seed(0)
    d = CloudDiscriminator(5, 4)
    x, mask = torch.randn(2, 6, 5), torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6], dtype=torch.bool)
    q, _ = torch.linalg.qr(torch.randn(3, 3))
    moved = x.clone()
    moved[..., :3] = x[..., :3] @ q.T + torch.randn(3)
    perm = torch.tensor([2, 0, 1, 3, 4, 5])
    t = torch.rand(2)
    assert torch.allclose(d(x, t, mask), d(moved, t, mask), atol=1e-4)
    assert torch.allclose(d(x, t, mask), d(x[:, perm], t, mask[:, perm]), atol=1e-5)
    garbage = x.clone()
    garbage[0, 4:] = 1e3  # padding is never read
    assert torch.allclose(d(x, t, mask)[0], d(garbage, t, mask)[0], atol=1e-5)


def test_x0_from_score_inverts_the_noising():
    x0, eps, t = torch.randn(6, 2), torch.randn(6, 2), torch.rand(6) * 0.9 + 0.05
    xt = SCH.diffuse(x0, t, eps)
    score = -eps / SCH.sigma(t)[:, None]
    assert torch.allclose(x0_from_score(score, xt, t, SCH), x0, atol=1e-4)


def test_styles_must_fit_the_codebook():
    with pytest.raises(ValueError, match="outside the student's codebook"):
        Distillation(TEACHERS[:2], SCH, 2, styles=[0, 2])
    with pytest.raises(ValueError, match="needs previous"):
        Distillation(TEACHERS[:1], SCH, 2, styles=[1], previous_styles=[0])
    with pytest.raises(ValueError, match="overlap"):
        Distillation(TEACHERS[:1], SCH, 2, styles=[0], previous=student(2), previous_styles=[0])


# ------------------------------------------------------------------ it learns, it forgets, it remembers
def test_each_style_reproduces_its_own_teacher(two_style_student):
    s = two_style_student
    for i in (0, 1):
        assert score_error(s, TEACHERS[i], i) < 0.02
        assert score_error(s, TEACHERS[1 - i], i) > 1.0  # and not the other one


def test_incremental_merging_forgets_without_the_regulariser_and_not_with_it(two_style_student):
    prev = copy.deepcopy(two_style_student).eval().requires_grad_(False)
    before = [score_error(prev, TEACHERS[i], i) for i in (0, 1)]
    errors = {}
    for reg in (False, True):
        grown = two_style_student.grow(1, seed=3)
        obj = Distillation(TEACHERS[2:], SCH, 3, styles=[2], previous=prev if reg else None,
                           previous_styles=(0, 1) if reg else ())
        fit(grown, obj, 300, seed=7)
        errors[reg] = [score_error(grown, TEACHERS[i], i) for i in (0, 1, 2)]
    assert errors[False][2] < 0.02 and errors[True][2] < 0.02  # the new style is learned either way
    assert min(errors[False][:2]) > 0.2  # forgetting: the old styles drift ~100x
    assert max(errors[True][:2]) < max(3 * max(before), 0.02)  # the regulariser keeps them


def test_style_errors_measure_each_style_against_its_teacher(two_style_student):
    from molfuse.fusion import style_errors

    x0 = torch.randn(128, 2) * 2
    errs = style_errors(two_style_student, {0: TEACHERS[0], 1: TEACHERS[1]}, x0, SCH, n_t=2)
    crossed = style_errors(two_style_student, {0: TEACHERS[1]}, x0, SCH, n_t=2)
    assert set(errs) == {0, 1} and max(errs.values()) < 0.02 and crossed[0] > 0.3
    assert style_errors(two_style_student, {0: TEACHERS[0]}, x0, SCH, n_t=2) == {0: errs[0]}  # same draws


def test_teachers_in_another_convention_are_refused():
    from molfuse.errors import ConventionError
    from molfuse.spaces import Euclidean, PointCloud

    other = GaussianMixture([[0.0, 0.0]], [1.0], schedule=VPSchedule(beta_max=10.0))
    with pytest.raises(ConventionError):
        Distillation([TEACHERS[0], other], SCH, 2)
    flat, cloud = build(BASE["name"], BASE["config"]), build(BASE["name"], BASE["config"])
    flat.space, cloud.space = Euclidean(), PointCloud(centred=3)
    with pytest.raises(ConventionError, match="space mismatch"):
        Distillation([flat, cloud], SCH, 2)
