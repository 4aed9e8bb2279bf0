"""Tiny registered models for engine tests (fast on 2 cores); imported by the engine test files."""

import contextlib

import torch.nn as nn

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
