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
