"""The fast paths compute what fp32 eager computes, within stated tolerances.

Expected values are the plain fp32 NCHW eager outputs of the same model (the reference
the fast path must reproduce), never numbers recorded from the fast path itself.
"""

import pytest
import torch
import torch.nn as nn

from convzoo.engine import accel
from convzoo.errors import UserError
from helpers import randomize_, rel_error


def _small_resnet():
    """A ResNet-shaped net (stem, two residual blocks with conv/BN pairs outside any
    nn.Sequential, global pool, linear) with non-trivial BN statistics, so folding matters."""

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))

    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        Block(16),
        Block(16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    return randomize_(m).eval()


def test_bn_folding_matches_unfolded_fp32():
    m = _small_resnet()
    folded, n = accel.fold_batchnorm(m)
    assert n == 5  # every BN follows a conv
    assert not any(isinstance(x, nn.BatchNorm2d) for x in folded.modules())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert rel_error(folded(x), m(x)) < 1e-5  # fp32 rounding only
    assert any(isinstance(x, nn.BatchNorm2d) for x in m.modules())  # the input is untouched


def test_sequential_fallback_folds_adjacent_pairs():
    m = _small_resnet()
    ref = m(torch.ones(1, 3, 16, 16))
    assert accel._fold_sequential_pairs(m) == 1  # only the stem's pair is adjacent
    assert rel_error(m(torch.ones(1, 3, 16, 16)), ref) < 1e-5


def test_bf16_channels_last_inference_agrees_with_fp32():
    """bf16 has an 8-bit mantissa (relative rounding 2^-9 = 0.2% per op); through ~6 layers
    the logits stay within 5% of their range, and the argmax agrees on nearly all inputs."""
    m = _small_resnet()
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
    fast = accel.prepare_for_inference(m, "bf16", channels_last=True)
    inner = fast.model
    assert next(inner.parameters()).dtype == torch.bfloat16
    conv = next(m for m in inner.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = fast(x)  # fp32 NCHW in, fp32 logits out
    assert out.dtype == torch.float32
    assert rel_error(out, ref) < 0.05
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9


def test_int8_static_quantization_agrees_with_fp32():
    """Per-channel int8 weights, uint8 activations: error within ~10% of the logit range."""
    m = _small_resnet()
    calib = [torch.randn(16, 3, 32, 32) for _ in range(4)]
    q = accel.quantize_int8(m, calib)
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        ref, out = m(x), q(x)
    assert rel_error(out, ref) < 0.1
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.8


def _cpu(monkeypatch, bf16_fast: bool):
    """A CPU whose bf16 matmuls measured fast (or slow): the measurement is replaced, so the tests
    do not depend on the machine running them."""
    monkeypatch.delenv("CONVZOO_PRECISION", raising=False)
    ratio = "6.00x" if bf16_fast else "0.60x"
    monkeypatch.setattr(
        accel, "bf16_measured_fast", lambda: (bf16_fast, f"bf16 matmuls measured {ratio} fp32")
    )


def test_default_precision_follows_the_measured_bf16_speed(monkeypatch):
    """bf16 units that measured slower than fp32 (a CPU with avx512_bf16 flags) give fp32."""
    monkeypatch.setattr(accel, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    _cpu(monkeypatch, bf16_fast=False)
    assert accel.default_precision("cpu") == "fp32"
    assert accel.precision_choice("cpu") == ("fp32", "bf16 matmuls measured 0.60x fp32")
    _cpu(monkeypatch, bf16_fast=True)
    assert accel.precision_choice("cpu") == ("bf16", "bf16 matmuls measured 6.00x fp32")
    monkeypatch.setenv("CONVZOO_PRECISION", "fp32")  # the variable wins over the measurement
    assert accel.precision_choice("cpu") == ("fp32", "CONVZOO_PRECISION=fp32")


def test_bf16_speed_is_measured_once_and_cached(monkeypatch, tmp_path):
    """No bf16 flags: fp32 without measuring; with them, matmuls timed once, the ratio kept in
    $CONVZOO_CACHE/cpu-bf16.json and read back (not timed again) in a later process."""
    monkeypatch.setenv("CONVZOO_CACHE", str(tmp_path))
    timed: list[str] = []

    def peak(precision, *args, **kwargs):
        timed.append(precision)
        return {"fp32": 100.0, "bf16": 70.0}[precision]

    monkeypatch.setattr(accel, "matmul_peak", peak)
    monkeypatch.setattr(accel, "cpu_flags", lambda: frozenset({"avx2"}))
    accel.bf16_measured_fast.cache_clear()
    fast, why = accel.bf16_measured_fast()
    assert not fast and "no bf16 units" in why and timed == []
    monkeypatch.setattr(accel, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    accel.bf16_measured_fast.cache_clear()
    fast, why = accel.bf16_measured_fast()
    assert not fast and "0.70x" in why and timed.count("bf16") == timed.count("fp32") >= 2  # alternated
    measured = len(timed)
    assert (tmp_path / "cpu-bf16.json").is_file()
    accel.bf16_measured_fast.cache_clear()  # as a later process would
    assert accel.bf16_measured_fast() == (
        False,
        why.replace("measured now, once, cached", "measured once, cached"),
    )
    assert len(timed) == measured  # read from the cache, not timed again
    accel.bf16_measured_fast.cache_clear()


def test_bad_precision_is_a_user_error():
    with pytest.raises(UserError):
        accel.check_precision("fp8")
    assert isinstance(accel.autocast_context("fp32"), type(accel.autocast_context("int8")))


def test_auto_settings_resolve_per_device(monkeypatch):
    """`precision: auto` -> bf16 + channels_last where bf16 measured fast, fp32 + NCHW where it
    measured slow; the env var wins."""
    _cpu(monkeypatch, bf16_fast=True)
    assert accel.resolve_auto("auto", "auto", "cpu") == ("bf16", True)
    assert accel.resolve_auto("fp32", "auto", "cpu") == ("fp32", False)
    assert accel.resolve_auto("fp32", True, "cpu") == ("fp32", True)
    _cpu(monkeypatch, bf16_fast=False)
    assert accel.resolve_auto("auto", None, "cpu") == ("fp32", False)
    monkeypatch.setenv("CONVZOO_PRECISION", "bf16")
    assert accel.resolve_auto("auto", "auto", "cpu")[0] == "bf16"
    monkeypatch.setenv("CONVZOO_PRECISION", "fp64")
    with pytest.raises(UserError):
        accel.resolve_auto("auto", "auto", "cpu")
