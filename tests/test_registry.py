import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from convzoo import create_model, list_models, model_info
from convzoo.errors import UserError
from convzoo.registry import build, register
from helpers import one_line


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
    assert one_line(r.stderr) and "resnet50" in r.stderr


def test_build_is_a_fresh_model_of_the_registered_name():
    """The registry builds (names -> builders); the class count defaults to the model's own."""
    with torch.device("meta"):
        net = build("resnet20_cifar")
        seven = build("resnet20_cifar", num_classes=7)
    assert net.model_name == "resnet20_cifar"
    assert net.get_classifier().out_features == model_info("resnet20_cifar").num_classes
    assert seven.get_classifier().out_features == 7
    with pytest.raises(UserError, match="resnet50"):
        build("resnet5O")


def test_create_model_without_weights_is_build():
    with torch.device("meta"):
        a = create_model("resnet20_cifar", num_classes=7, shortcut_pad="split")
        b = build("resnet20_cifar", num_classes=7, shortcut_pad="split")
    assert a.model_name == b.model_name == "resnet20_cifar"
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


def test_the_registry_loads_no_weights_code():
    """A leaf at run time too: building through the registry imports neither the factory nor the
    hub, interop or the weights files' module."""
    code = (
        "import sys; from convzoo import registry; registry.build('resnet20_cifar'); "
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['convzoo', 'factory'], ['convzoo', 'hub'], ['convzoo', 'interop'], ['convzoo', 'weights'])))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
