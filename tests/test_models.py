"""Every registered model: forward/backward, output shape, aux outputs, reset_classifier."""

import pytest
import torch

from convzoo import create_model, list_models, model_info
from convzoo.layers import ModelOutput

MODELS = list_models()


def test_registry_is_populated():
    assert len(MODELS) >= 1


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name):
    torch.manual_seed(0)
    info = model_info(name)
    size = info.min_input_size
    model = create_model(name, num_classes=7)
    model.train()
    x = torch.randn(2, 3, size, size)
    out = model(x)
    if isinstance(out, ModelOutput):
        logits, aux = out
        assert len(aux) >= 1
        for a in aux:
            assert a.shape == (2, 7)
        loss = logits.sum() + sum(a.sum() for a in aux)
    else:
        logits = out
        loss = logits.sum()
    assert logits.shape == (2, 7)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "some parameter got no gradient in training mode"
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 7)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", MODELS)
def test_reset_classifier_and_head(name):
    info = model_info(name)
    model = create_model(name).eval()
    model.reset_classifier(3)
    x = torch.randn(1, 3, info.min_input_size, info.min_input_size)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert model.forward_head(feats).shape == (1, 3)
        assert model(x).shape == (1, 3)


@pytest.mark.parametrize("name", MODELS)
def test_declared_head_is_what_reset_replaces(name):
    """`head_paths` names every layer that depends on the class count (found independently by
    building the model for two class counts), and reset_classifier replaces those and no other."""
    with torch.device("meta"):
        a, b = create_model(name, num_classes=1000), create_model(name, num_classes=7)
    sa, sb = a.state_dict(), b.state_dict()
    depends = {k.rsplit(".", 1)[0] for k, v in sa.items() if v.shape != sb[k].shape}
    assert set(a.head_paths()) == depends
    assert a.get_classifier() is a.get_submodule(a.head_paths()[0])
    before = {n: p for n, p in a.named_parameters()}
    a.reset_classifier(5)
    replaced = {n for n, p in a.named_parameters() if before.get(n) is not p}
    assert {n.rsplit(".", 1)[0] for n in replaced} == depends
    assert all(a.get_submodule(h).weight.shape[0] == 5 for h in a.head_paths())
