"""Entry point for the torchrun tests: `python tests/_dist_entry.py <convzoo args>` with the tiny
test models registered (torchrun starts a fresh interpreter per worker, so they must be
registered there), plus `plain_test`: a small network without batch statistics or dropout,
whose training is a function of the global batch only (no per-process statistics)."""

import sys

import torch
import torch.nn as nn

import tiny_models  # tests/ is on sys.path: this file runs as a script from there
from convzoo.cli import main
from convzoo.layers import ZooModel
from convzoo.registry import register


class PlainNet(ZooModel):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(4),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(16, num_classes)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x):
        return self.fc(x)

    def reset_classifier(self, num_classes):
        self.fc = nn.Linear(16, num_classes)


if __name__ == "__main__":
    torch.set_num_threads(1)
    with tiny_models.registered():
        register("plain_test", paper="torchrun test model", input_size=32, num_classes=10, min_input_size=8)(
            lambda num_classes=10, **kw: PlainNet(num_classes)
        )
        sys.exit(main(sys.argv[1:]))
