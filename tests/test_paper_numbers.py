"""Every model in src/convzoo/data/reference/paper_numbers.json: registered, and its counts within tolerance.

The most precise published figure is the target: 'derived' (computed from the paper's widths)
before 'reference' (an exact count of a public implementation) before 'paper' (rounded as printed).
"""

import pytest
import torch

from convzoo import create_model, list_models, model_info
from convzoo.analysis.profile import profile
from helpers import load_paper_numbers

NUMBERS = load_paper_numbers()
MODELS = sorted(NUMBERS["models"])


def _target(entry: dict) -> float:
    for key in ("derived", "reference", "paper"):
        if key in entry:
            return entry[key]
    raise KeyError(entry)


@pytest.mark.parametrize("name", MODELS)
def test_counts_match_published(name):
    assert name in list_models(), f"{name} is in paper_numbers.json but not registered"
    entry = NUMBERS["models"][name]
    assert model_info(name).input_size == entry["input"]
    with torch.device("meta"):
        model = create_model(name)
    p = profile(model, entry["input"])
    if "params_M" in entry:
        want = _target(entry["params_M"])
        assert p.params / 1e6 == pytest.approx(want, rel=entry["params_M"]["tol"])
    if "macs_G" in entry:
        want = _target(entry["macs_G"])
        assert p.macs / 1e9 == pytest.approx(want, rel=entry["macs_G"]["tol"])
