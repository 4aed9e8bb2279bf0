"""The test-only networks, never registered outside a test.

`TinyNet` (and `tiny_test`, `tiny_aux_test`, `small_test` through `registered()`): the engine
tests' model, fast on 2 cores. `ConvBNNet` is a convzoo-style model with ConvBNAct keys for the
interop, export and serve tests; `OtherConvBNNet` is the same architecture written as another
code base would write it (different names, same layer order), for `--from remap`.
`register_convbn(monkeypatch)` puts ConvBNNet in the registry for one test only.
"""

import contextlib
from collections import OrderedDict

import torch
import torch.nn as nn

from convzoo import registry
from convzoo.layers import ModelOutput, ZooModel
from convzoo.registry import _MODELS, _ensure_loaded, register


class TinyNet(ZooModel):
    def __init__(self, num_classes=10, aux=False, width=8):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.width = w
        self.fc = nn.Linear(4 * w, num_classes)
        self.aux_fc = nn.Linear(4 * w, num_classes) if aux else None

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x):
        return self.fc(x)

    def forward(self, x):
        f = self.forward_features(x)
        if self.aux_fc is not None and self.training:
            return ModelOutput(self.fc(f), (self.aux_fc(f),))
        return self.fc(f)

    def reset_classifier(self, num_classes):
        self.fc = nn.Linear(4 * self.width, num_classes)


def _tiny(num_classes=10, **kw):
    return TinyNet(num_classes, **kw)


def _tiny_aux(num_classes=10, **kw):
    return TinyNet(num_classes, aux=True, **kw)


def _small(num_classes=10, **kw):
    return TinyNet(num_classes, width=24, **kw)


NAMES = {"tiny_test": _tiny, "tiny_aux_test": _tiny_aux, "small_test": _small}


@contextlib.contextmanager
def registered():
    """Register the tiny models for the duration of a test module only, so the registry-wide
    parametrisation of tests/test_models.py (collected earlier) never sees them."""
    _ensure_loaded()
    for name, fn in NAMES.items():
        if name not in _MODELS:
            register(name, paper="engine test model", input_size=32, num_classes=10, min_input_size=8)(fn)
    try:
        yield
    finally:
        for name in NAMES:
            _MODELS.pop(name, None)


TINY = "tiny_interop_net"


def _conv_bn(cin, cout, stride):  # what convzoo's ConvBNAct builds, keys conv/bn/relu
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn=nn.BatchNorm2d(cout), relu=nn.ReLU()
        )
    )


class ConvBNNet(ZooModel):
    def __init__(self, num_classes=1000, width=8):
        super().__init__()
        self.features = nn.Sequential(_conv_bn(3, width, 1), _conv_bn(width, 2 * width, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))

    def reset_classifier(self, num_classes):
        self.fc = nn.Linear(self.fc.in_features, num_classes)


class OtherConvBNNet(nn.Module):
    """ConvBNNet as another implementation names it."""

    def __init__(self, num_classes=1000, width=8):
        super().__init__()
        self.stem_conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.stem_norm = nn.BatchNorm2d(width)
        self.down_conv = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.down_norm = nn.BatchNorm2d(2 * width)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = torch.relu(self.stem_norm(self.stem_conv(x)))
        x = torch.relu(self.down_norm(self.down_conv(x)))
        return self.head(x.mean((2, 3)))


def register_convbn(monkeypatch, name=TINY):
    info = registry.ModelInfo(
        name,
        lambda num_classes=1000, **kw: ConvBNNet(num_classes, **kw),
        "test only",
        input_size=32,
        min_input_size=16,
    )
    registry._ensure_loaded()
    monkeypatch.setitem(registry._MODELS, name, info)
    from convzoo import interop

    interop.target_shapes.cache_clear()
    interop.class_dims.cache_clear()
    return name
