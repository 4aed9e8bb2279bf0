"""Property-based fuzzing (Hypothesis) of what a user or a downloaded file can set: any recipe /
`--set` value and any WeightSpec JSON is either accepted, and then the code that consumes it runs,
or refused with a one-line UserError (exit code 2 in the command line) - never another exception.

Bounded: 100 examples each, derandomized (the same examples on every run), a deadline per example.
"""

import json
import math

import pytest
import torch
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from convzoo.errors import UserError  # noqa: E402
from helpers import one_line  # noqa: E402

BOUNDED = settings(
    max_examples=100,
    deadline=10_000,  # per example; the first one pays the imports
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _base() -> dict:
    from convzoo.recipes import base_settings

    return base_settings()


def _base_keys() -> list[str]:
    from convzoo.recipes.config import dotted_items

    keys = sorted(key for key, _ in dotted_items(_base()))
    return keys + ["optim", "data", "optim.lrr", "no_such_key", "data.mean.0", "lookahead.every"]


def _default(key: str):
    from convzoo.recipes.config import dotted_get

    return dotted_get(_base(), key)


def near(value) -> list:
    """Values next to a valid one: the edges and the usual mistakes (half the examples use these,
    so that many are accepted and the consuming code runs)."""
    common = [None, True, "x", 0, -1, 10**9, float("inf"), float("nan")]
    if isinstance(value, bool):
        return [value, not value, *common]
    if isinstance(value, (int, float)):
        return [value, value * 2, value / 2, value + 1, -value, 1, 0.5, 1e-8, *common]
    if isinstance(value, list):
        return [
            value,
            value[:1],
            value + value[:1],
            [],
            [0] * len(value),
            [-1] * len(value),
            [32, 0.5],
            *common,
        ]
    if isinstance(value, str):
        return [value, "", value.upper(), *common]
    return [value, 1, 16, 32, 0.5, [24, 0.6], [0.5, 0.5, 0.5], *common]  # null defaults


def setting():
    """(key, value, raw text or None): 40 % the default, 40 % next to it, 10 % anything, 10 % raw text."""

    def value_for(k):
        return st.integers(0, 9).flatmap(
            lambda n: st.tuples(
                st.just(k),
                st.just(_default(k)) if n < 4 else st.sampled_from(near(_default(k))) if n < 8 else values,
                raw_text if n == 9 else st.none(),
            )
        )

    return st.sampled_from(_base_keys()).flatmap(value_for)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["auto", "sgd", "cosine", "cifar", "random", "fp32", "bf16"]),
)
values = st.one_of(
    scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=4), scalars, max_size=2)
)
raw_text = st.text(max_size=12)  # what a user may type after `=`, YAML or not


def _item(key: str, value, raw: str | None) -> str:
    if raw is not None:
        return f"{key}={raw}"
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    return f"{key}={text}"


def consume(cfg) -> None:
    """What a training run builds from its settings before the first image: transforms, the
    optimizer, the learning-rate schedule at a few points, EMA; and the plain form it stores."""
    import tiny_models
    from convzoo.data.transforms import eval_transform, train_transform
    from convzoo.recipes.config import RunConfig
    from convzoo.training.finetune import param_groups
    from convzoo.training.optim import Lookahead, LRSchedule, ModelEMA, build_optimizer

    d = cfg.data
    size = d.input_size or 32
    train_transform(d.augment, size, d.mean, d.std)
    eval_transform(size, d.mean, d.std)
    net = tiny_models.TinyNet(3)
    opt = build_optimizer(net, cfg.optim)
    schedule = LRSchedule(opt, cfg.schedule, cfg.optim.lr, cfg.epochs)
    for epoch in (0, 0.5, cfg.epochs / 2, cfg.epochs - 1e-3):
        assert math.isfinite(schedule.step(epoch))
    if cfg.ema:
        ModelEMA(net, cfg.ema).update(net)
    if cfg.lookahead:
        Lookahead(net, cfg.lookahead.every, cfg.lookahead.decay).update(net, 0.5)
    param_groups(net, "tiny_test", 3, 1.0, cfg.optim)
    plain = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))  # config.yaml, read back on resume
    assert RunConfig.from_dict(plain) == cfg


@BOUNDED
@given(st.lists(setting(), min_size=1, max_size=2))
def test_any_set_value_runs_or_is_one_line(items):
    from convzoo.recipes import resolve

    sets = [_item(k, v, raw) for k, v, raw in items]
    try:
        cfg = resolve("tiny_test", "demo", None, sets)
    except UserError as e:
        assert one_line(e), str(e)
        hypothesis.event("refused")
        return
    hypothesis.event("accepted")
    consume(cfg)


spec_fields = st.sampled_from(
    [
        "model",
        "num_classes",
        "labels",
        "mean",
        "std",
        "input_size",
        "crop_size",
        "resize_size",
        "interpolation",
        "source",
        "converted_from",
        "params",
        "macs",
        "metrics",
        "extra",
        "model_kwargs",
        "unknown",
    ]
)
good = {
    "model": "tiny_test",
    "num_classes": 3,
    "input_size": 32,
    "crop_size": 32,
    "resize_size": 36,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "labels": ["a", "b", "c"],
    "interpolation": "bicubic",
    "params": 10,
    "metrics": {},
    "unknown": 1,
}
field_near = st.sampled_from(sorted(good)).flatmap(
    lambda f: st.tuples(st.just(f), st.sampled_from(near(good[f])))
)
near_spec = st.lists(field_near, min_size=1, max_size=2).map(lambda kv: {**good, **dict(kv)})


@BOUNDED
@given(
    st.integers(0, 9).flatmap(
        lambda n: (
            near_spec
            if n < 6
            # 60 % near a valid spec
            else (
                st.dictionaries(spec_fields, values, max_size=3).map(lambda d: {**good, **d})
                if n < 8
                else st.one_of(st.dictionaries(spec_fields, values, max_size=3), values)
            )
        )
    )
)
def test_any_weightspec_is_usable_or_one_line(raw):
    from PIL import Image

    from convzoo.data.transforms import eval_transform_from_spec
    from convzoo.weights import WeightSpec

    try:
        spec = WeightSpec.from_json(json.dumps(raw))
    except UserError as e:
        assert one_line(e), str(e)
        hypothesis.event("refused")
        return
    hypothesis.event("accepted")
    assert WeightSpec.from_json(spec.to_json()) == spec
    transform = eval_transform_from_spec(spec)
    if max(spec.input_size, spec.crop_size or 0, spec.resize_size or 0) <= 256:
        out = transform(Image.new("RGB", (12, 10)))
        assert out.shape[0] == 3 and torch.isfinite(out).all()


@pytest.fixture(autouse=True, scope="module")
def _tiny(tiny_models_one_thread):
    import convzoo.data.transforms
    import convzoo.training.train  # noqa: F401

    yield
