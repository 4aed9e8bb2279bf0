import subprocess
import sys

import pytest
import torch.nn as nn

from convzoo import create_model, list_models
from convzoo.errors import UserError
from convzoo.registry import register


def test_duplicate_name_rejected():
    name = list_models()[0]
    with pytest.raises(ValueError, match="registered twice"):
        register(name, paper="x", input_size=32)(lambda num_classes=10: nn.Linear(1, 1))


def test_unknown_name_suggests_closest():
    with pytest.raises(UserError) as e:
        create_model("resnet5O")
    assert "resnet50" in str(e.value)


def test_glob_filter():
    cifar = list_models("*_cifar")
    assert cifar and all(n.endswith("_cifar") for n in cifar)
    assert set(cifar) < set(list_models())


def test_cli_unknown_model_one_line_exit_2():
    r = subprocess.run(
        [sys.executable, "-m", "convzoo", "summary", "resnet5O"], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "resnet50" in r.stderr
