"""Third-party CIFAR ResNets (option-A shortcuts) load and score as published.

The reference is an independent implementation (tests/_akamaster.py: the module structure of
akamaster/pytorch_resnet_cifar10, whose zero channels sit on both sides), saved as its
trainer saves it; convzoo converts it and must give the same logits. The same weights in
convzoo's default convention ("after") must NOT give them: the option is what makes them
score as published. Also `convert --from remap` of a `.safetensors` file (keys sorted).
"""

import pytest
import torch
from safetensors.torch import save_file

from _akamaster import randomized, save_like_akamaster
from convzoo import create_model
from convzoo.errors import UserError
from convzoo.interop import convert
from convzoo.weights import save_weights
from helpers import one_line

SPLIT = {"shortcut_pad": "split"}


def logits(net, seed=1):
    torch.manual_seed(seed)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        return net.eval()(x)


def max_rel(a, b):
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


@pytest.fixture(scope="module")
def ref():
    return randomized(n=3)  # ResNet-20


def test_split_convention_matches_the_port_and_after_does_not(ref, tmp_path):
    save_like_akamaster(ref, tmp_path / "resnet20-x.th")
    state, spec = convert("remap", str(tmp_path / "resnet20-x.th"), "resnet20_cifar", model_kwargs=SPLIT)
    assert spec.model_kwargs == SPLIT and spec.num_classes == 10
    assert torch.equal(state["fc.weight"], ref.linear.weight.detach())
    save_weights(str(tmp_path / "w.safetensors"), state, spec)
    ours = create_model("resnet20_cifar", weights=str(tmp_path / "w.safetensors"))  # applies model_kwargs
    assert max_rel(logits(ours), logits(ref)) <= 1e-5
    after = create_model("resnet20_cifar", num_classes=10)
    after.load_state_dict(state)
    assert max_rel(logits(after), logits(ref)) > 1e-3  # the convention matters


def test_model_kwargs_are_checked(ref, tmp_path):
    save_like_akamaster(ref, tmp_path / "r.th")
    with pytest.raises(UserError, match="do not fit"):
        convert("remap", str(tmp_path / "r.th"), "resnet20_cifar", model_kwargs={"shortcut_pad": "middle"})
    with pytest.raises(UserError, match="do not fit"):
        convert("remap", str(tmp_path / "r.th"), "resnet20_cifar", model_kwargs={"no_such_option": 1})


def test_shortcut_pad_is_only_for_option_a():
    with pytest.raises(ValueError, match="option-A"):
        create_model("resnet18", shortcut_pad="split")
    with pytest.raises(ValueError, match="shortcut_pad"):
        create_model("resnet20_cifar", shortcut_pad="middle")


def test_remap_safetensors_recovers_order_from_names(ref, tmp_path):
    """safetensors sorts keys; the names (conv1, bn1, layer*, linear) give the order back."""
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(sd, str(tmp_path / "r.safetensors"))
    save_like_akamaster(ref, tmp_path / "r.th")
    from_st, _ = convert("remap", str(tmp_path / "r.safetensors"), "resnet20_cifar", model_kwargs=SPLIT)
    from_th, _ = convert("remap", str(tmp_path / "r.th"), "resnet20_cifar", model_kwargs=SPLIT)
    assert from_st.keys() == from_th.keys()
    assert all(torch.equal(from_st[k], from_th[k]) for k in from_th)


def test_remap_safetensors_refuses_when_names_do_not_tell(ref, tmp_path):
    """Foreign names everywhere: many same-shaped modules, so the order is ambiguous: one line."""
    sd = {f"net.{k}": v.contiguous() for k, v in ref.state_dict().items()}
    save_file(sd, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(UserError, match="cannot recover the module order") as e:
        convert("remap", str(tmp_path / "foreign.safetensors"), "resnet20_cifar")
    assert one_line(e.value) and ".pth" in str(e.value)
