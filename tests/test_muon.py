"""optim.name muon: Muon for the convolution filters, SGD for the rest (training/optim.py MuonSGD).

Checked against torch's own implementations: torch.optim.Muon for the filters (it orthogonalizes
in bf16 and takes 2-D parameters only, so the filters here are 1x1) and torch.optim.SGD for the
other parameters."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convzoo.recipes import resolve
from convzoo.training.optim import NS_COEFFICIENTS, LRSchedule, MuonSGD, build_optimizer, orthogonalize
from helpers import one_line


def _muon(**changes):
    optim = resolve("vgg8_cifar", "airbench").optim
    return dataclasses.replace(
        optim, name="muon", momentum=0.9, nesterov=True, weight_decay=0.0, muon_momentum=0.6, **changes
    )


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 24), cols=st.integers(1, 24), seed=st.integers(0, 2**16), steps=st.integers(1, 5))
def test_orthogonalize_keeps_the_singular_vectors_and_maps_each_singular_value(rows, cols, seed, steps):
    """The matrix iteration equals the scalar polynomial applied to each singular value in the
    SVD's basis: U diag(p^steps(s / |G|_F)) V^T."""
    g = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    a, b, c = NS_COEFFICIENTS
    x = s / (g.norm() + 1e-7)
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    expected = u @ torch.diag(x) @ vh
    assert torch.allclose(orthogonalize(g, steps), expected, atol=1e-9)


def test_orthogonalize_brings_well_conditioned_singular_values_near_one():
    g = torch.randn(48, 216, generator=torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(orthogonalize(g, 5))
    assert s.min() > 0.6 and s.max() < 1.25


def _pair(seed=0):
    """The same 1x1 filter bank (norm sqrt(out): MuonSGD's rescaling leaves it as it is), a bias."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 12, generator=gen)
    w *= 8**0.5 / w.norm()
    return w, torch.randn(8, generator=gen)


def test_filters_follow_torch_muon_and_the_rest_torch_sgd():
    """Five steps with the same gradients: the 4-D 1x1 filters follow torch.optim.Muon on the same
    2-D matrix, rescaled to norm sqrt(out) before each of its steps as MuonSGD does (close, not
    equal: torch orthogonalizes in bf16), and the bias follows torch.optim.SGD exactly."""
    w, bias = _pair()
    ours_w, ours_b = torch.nn.Parameter(w.clone().view(8, 12, 1, 1)), torch.nn.Parameter(bias.clone())
    ref_w, ref_b = torch.nn.Parameter(w.clone()), torch.nn.Parameter(bias.clone())
    groups = [{"params": [ours_w], "orthogonalize": True, "lr": 0.002}, {"params": [ours_b], "lr": 0.1}]
    ours = MuonSGD(groups, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, muon_momentum=0.6)
    muon = torch.optim.Muon([ref_w], lr=0.002, weight_decay=0.0, momentum=0.6, nesterov=True, ns_steps=3)
    sgd = torch.optim.SGD([ref_b], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        gw, gb = torch.randn(8, 12, generator=gen), torch.randn(8, generator=gen)
        ours_w.grad, ours_b.grad, ref_w.grad, ref_b.grad = gw.view(8, 12, 1, 1).clone(), gb.clone(), gw, gb
        ours.step()
        with torch.no_grad():
            ref_w.mul_(8**0.5 / ref_w.norm())
        muon.step()
        sgd.step()
    moved = (ref_w.detach() - w).norm()
    assert moved > 0.01
    assert (ours_w.detach().view(8, 12) - ref_w.detach()).norm() < 0.03 * moved
    assert torch.equal(ours_b.detach(), ref_b.detach())


def test_filters_are_rescaled_to_norm_sqrt_out_and_the_state_round_trips():
    """A step first rescales a filter bank to norm sqrt(out_channels) (at a tiny lr that is what
    remains); a copy loaded from the state dict then takes the same next step."""
    import copy

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3), torch.nn.BatchNorm2d(6), torch.nn.Flatten(), torch.nn.Linear(96, 2)
    )
    x, y = torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        net[0].weight.mul_(10.0)
    cfg = _muon(lr=0.1, muon_lr=1e-6)

    def step(model, opt):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    opt = build_optimizer(net, cfg)
    step(net, opt)
    assert net[0].weight.norm().item() == pytest.approx(6**0.5, rel=1e-4)
    twin = copy.deepcopy(net)
    twin_opt = build_optimizer(twin, cfg)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    step(net, opt)
    step(twin, twin_opt)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), twin.state_dict().values()))


def test_the_schedule_scales_the_filters_lr_from_muon_lr():
    """filter_groups gives the filters lr_mult = muon_lr / lr, so LRSchedule's factor applies to both."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(net, _muon(lr=0.4, muon_lr=0.04))
    linear = resolve("tiny_test", sets=["schedule.name=linear", "schedule.warmup_epochs=0"]).schedule
    schedule = LRSchedule(opt, linear, 0.4, 10)
    schedule.step(5.0)
    by_kind = {g["orthogonalize"]: g["lr"] for g in opt.param_groups}
    assert by_kind[False] == pytest.approx(0.2) and by_kind[True] == pytest.approx(0.02)
    # the filters; then the conv bias, BN scale and BN shift
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]


def test_train_refuses_muon_for_a_network_without_batchnorm(tmp_path, capsys):
    from convzoo.cli import main

    args = ["train", "nin_cifar", "--data", "synthetic", "--out", str(tmp_path / "run"), "--epochs", "1"]
    rc = main([*args, "--set", "optim.name=muon", "--set", "data.max_train_images=8", "--set", "workers=0"])
    err = capsys.readouterr().err
    assert rc == 2 and "BatchNorm" in err and one_line(err), err
