"""Engine units: recipes, lr schedules, losses, top-k, ten-crop averaging, EMA, checkpoints.

Expected values are derived by hand from the papers' rules (stated in each docstring).
"""

import dataclasses
import math
import os

import pytest
import torch
import torch.nn as nn

from convzoo.errors import UserError
from convzoo.inference.evaluate import evaluate, topk_correct
from convzoo.layers import ModelOutput
from convzoo.recipes import (
    base_settings,
    default_recipe,
    parse_set,
    recipe_names,
    resolve,
    with_later_settings,
)
from convzoo.recipes.config import IDENTITY, LookaheadConfig, LossConfig, RunConfig, field_tree
from convzoo.training.checkpoint import (
    atomic_write,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from convzoo.training.optim import Lookahead, LRSchedule, ModelEMA, build_optimizer
from convzoo.training.train import compute_loss


# ---- recipes ------------------------------------------------------------------------------------
def test_every_shipped_recipe_resolves_against_base():
    for name in recipe_names():
        cfg = resolve("resnet50", name)
        assert cfg.recipe == name and cfg.epochs >= 1


def test_config_fields_are_base_yaml_keys():
    """base.yaml documents every setting and its default; the typed config has exactly its keys
    (the optional groups, null there, as leaves), plus the run's identity, which no recipe sets."""

    def keys(node: dict) -> dict:
        return {k: keys(v) if isinstance(v, dict) else None for k, v in node.items()}

    fields = field_tree(RunConfig)
    assert [k for k in fields if k in IDENTITY] == list(IDENTITY)
    assert {k: v for k, v in fields.items() if k not in IDENTITY} == keys(base_settings())
    assert list(fields)[2:-1] == list(base_settings())  # config.yaml keeps base.yaml's order


def test_config_plain_form_round_trips():
    cfg = resolve("resnet20_cifar", "airbench", sets=["lookahead={every: 5, decay: 0.5}"], data_spec="d")
    plain = cfg.to_dict()
    assert plain["lookahead"] == {"every": 5, "decay": 0.5} and plain["data"]["mean"] == list(cfg.data.mean)
    assert RunConfig.from_dict(plain) == cfg and plain["data_spec"] == "d"
    with pytest.raises(UserError, match="unknown setting 'optim.lrr'"):
        RunConfig.from_dict({**plain, "optim": {**plain["optim"], "lrr": 1}})
    with pytest.raises(UserError, match="setting schedule.gamma is missing"):
        RunConfig.from_dict(
            {**plain, "schedule": {k: v for k, v in plain["schedule"].items() if k != "gamma"}}
        )
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]


def test_a_run_saved_before_a_setting_existed_gets_its_default():
    plain = resolve("resnet20_cifar").to_dict()
    del plain["data"]["progressive"], plain["tensorboard"]
    with pytest.raises(UserError, match="setting tensorboard is missing"):
        RunConfig.from_dict(plain)
    cfg = RunConfig.from_dict(with_later_settings(plain))
    assert cfg.data.progressive is None and cfg.tensorboard == "auto"


def test_family_default_recipes():
    assert default_recipe("resnet20_cifar") == "resnet_cifar"
    assert default_recipe("vgg8_cifar") == "airbench"
    assert default_recipe("resnet50") == "resnet"
    assert default_recipe("alexnet_original") == "alexnet"
    assert default_recipe("vgg16_bn") == "vgg"
    assert default_recipe("googlenet_original") == "googlenet"
    assert default_recipe("inception_v3") == "inception_v3"
    assert default_recipe("inception_resnet_v2") == "inception_v4"


def test_paper_settings_in_recipes():
    """Numbers quoted from the papers (see each YAML's header)."""
    c = resolve("resnet20_cifar")  # He et al. Sec 4.2
    assert (c.optim.lr, c.optim.momentum, c.optim.weight_decay, c.batch_size) == (
        0.1,
        0.9,
        1e-4,
        128,
    )
    # 32k/48k of 64k iterations at 391 iterations per epoch
    assert c.schedule.milestones == (round(32000 / 391), round(48000 / 391))
    assert c.epochs == round(64000 / 391)
    v3 = resolve("inception_v3")
    assert v3.optim.name == "rmsprop" and v3.optim.alpha == 0.9 and v3.optim.eps == 1.0
    assert v3.loss.label_smoothing == 0.1 and v3.loss.aux_weight == 0.4 and v3.clip_grad_norm == 2.0
    assert resolve("googlenet").loss.aux_weight == 0.3
    a = resolve("alexnet")
    assert a.optim.weight_decay == 0.0005 and a.schedule.name == "plateau"
    assert resolve("vgg16").schedule.name == "plateau"


def test_set_overrides_with_dotted_keys_and_yaml_values():
    cfg = resolve(
        "resnet50",
        "resnet",
        flags={"epochs": 3, "optim": {"lr": None}},
        sets=["optim.lr=0.05", "schedule.milestones=[1, 2]", "ema=0.999", "channels_last=true"],
    )
    assert cfg.epochs == 3 and cfg.optim.lr == 0.05 and cfg.optim.momentum == 0.9
    assert cfg.schedule.milestones == (1, 2) and cfg.ema == 0.999 and cfg.channels_last is True
    assert parse_set(["a.b.c=x"]) == {"a": {"b": {"c": "x"}}}


@pytest.mark.parametrize("sets", [["optim.lrr=0.1"], ["nope=1"], ["optim=3"], ["optim.lr"], ["=4"]])
def test_bad_set_is_a_user_error(sets):
    with pytest.raises(UserError):
        resolve("resnet50", None, sets=sets)


def test_unknown_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="unknown recipe"):
        resolve("resnet50", "no_such_recipe")
    bad = tmp_path / "r.yaml"
    bad.write_text("optim: {lr: [\n")
    with pytest.raises(UserError, match="not valid YAML"):
        resolve("resnet50", str(bad))
    typo = tmp_path / "t.yaml"
    typo.write_text("optim: {learning_rate: 0.1}\n")
    with pytest.raises(UserError, match="optim.learning_rate"):
        resolve("resnet50", str(typo))


def test_set_turns_off_a_group_that_is_off_by_default_but_no_other(tmp_path):
    """`lookahead` is null in base.yaml and a group in this recipe: `--set lookahead=null` turns
    it off. `optim` is a group that every run needs: null for it stays an error."""
    recipe = tmp_path / "la.yaml"
    recipe.write_text("lookahead: {every: 5, decay: 0.5}\n")
    assert resolve("vgg8_cifar", str(recipe)).lookahead == LookaheadConfig(every=5, decay=0.5)
    assert resolve("vgg8_cifar", str(recipe), sets=["lookahead.every=3"]).lookahead == LookaheadConfig(3, 0.5)
    assert resolve("vgg8_cifar", str(recipe), sets=["lookahead=null"]).lookahead is None
    with pytest.raises(UserError, match="'optim' is a group of settings"):
        resolve("vgg8_cifar", str(recipe), sets=["optim=null"])
    with pytest.raises(UserError, match="'lookahead' is a group of settings"):
        resolve("vgg8_cifar", str(recipe), sets=["lookahead=5"])


# ---- schedules ----------------------------------------------------------------------------------
def _sched(lr: float = 0.1, epochs: int = 90, **settings):
    schedule = dataclasses.replace(resolve("resnet50").schedule, **settings)
    return LRSchedule(None, schedule, base_lr=lr, epochs=epochs)


def test_step_schedule_divides_by_ten_at_milestones():
    s = _sched(name="step", milestones=[30, 60], gamma=0.1)
    for epoch, lr in [(0, 0.1), (29.99, 0.1), (30, 0.01), (59.5, 0.01), (60, 0.001), (89, 0.001)]:
        assert s.lr_at(epoch) == pytest.approx(lr)


def test_exponential_schedule_inception():
    """Inception-v3: 0.045 decayed by 0.94 every two epochs -> 0.045 * 0.94**floor(e/2)."""
    s = LRSchedule(None, resolve("inception_v3").schedule, base_lr=0.045, epochs=100)
    assert s.lr_at(0) == pytest.approx(0.045)
    assert s.lr_at(1.9) == pytest.approx(0.045)
    assert s.lr_at(2) == pytest.approx(0.045 * 0.94)
    assert s.lr_at(11) == pytest.approx(0.045 * 0.94**5)


def test_cosine_and_warmup():
    s = _sched(name="cosine", min_lr=0.0, warmup_epochs=0, epochs=10)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(5) == pytest.approx(0.05)  # cos(pi/2) = 0 -> half
    assert s.lr_at(10) == pytest.approx(0.0, abs=1e-12)
    w = _sched(name="constant", warmup_epochs=2, warmup_factor=0.1)
    assert w.lr_at(0) == pytest.approx(0.01)
    assert w.lr_at(1) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))
    assert w.lr_at(2) == pytest.approx(0.1)


def test_plateau_divides_when_val_error_stops_improving():
    s = _sched(name="plateau", patience=1, gamma=0.1)
    s.epoch_end(50.0)  # improves
    s.epoch_end(50.0)  # 1 bad epoch (= patience): keep
    assert s.lr_at(3) == pytest.approx(0.1)
    s.epoch_end(51.0)  # 2 bad epochs > patience: /10
    assert s.lr_at(3) == pytest.approx(0.01)
    s.epoch_end(40.0)
    s.epoch_end(41.0)
    assert s.lr_at(5) == pytest.approx(0.01)
    restored = _sched(name="plateau", patience=1, gamma=0.1)
    restored.load_state_dict(s.state_dict())
    assert restored.lr_at(5) == s.lr_at(5)


def test_schedule_sets_optimizer_lr_and_rmsprop_settings():
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, resolve("inception_v3").optim)
    assert isinstance(opt, torch.optim.RMSprop)
    g = opt.param_groups[0]
    assert (g["alpha"], g["eps"], g["momentum"]) == (0.9, 1.0, 0.9)
    s = LRSchedule(opt, resolve("inception_v3").schedule, base_lr=0.045, epochs=100)
    s.step(4.5)
    assert g["lr"] == pytest.approx(0.045 * 0.94**2)


# ---- losses, metrics ----------------------------------------------------------------------------
def test_aux_loss_weighting():
    """All-zero logits over C classes give cross-entropy ln C; main + 0.3 x each of two aux heads
    -> (1 + 2 * 0.3) ln 10."""
    z = torch.zeros(4, 10)
    labels = torch.tensor([0, 3, 5, 9])
    loss, logits = compute_loss(
        ModelOutput(z, (z.clone(), z.clone())), labels, LossConfig(label_smoothing=0.0, aux_weight=0.3)
    )
    assert loss.item() == pytest.approx(1.6 * math.log(10), rel=1e-6)
    assert logits is z
    plain, _ = compute_loss(z, labels, LossConfig(label_smoothing=0.0, aux_weight=0.3))
    assert plain.item() == pytest.approx(math.log(10), rel=1e-6)


def test_label_smoothing_value():
    """Two classes, logits (0, ln 3): p = (1/4, 3/4); target 1 with smoothing 0.1 -> q = (0.05, 0.95);
    loss = -(0.05 ln 1/4 + 0.95 ln 3/4)."""
    logits = torch.tensor([[0.0, math.log(3)]])
    loss, _ = compute_loss(logits, torch.tensor([1]), LossConfig(label_smoothing=0.1, aux_weight=0.0))
    assert loss.item() == pytest.approx(-(0.05 * math.log(0.25) + 0.95 * math.log(0.75)), rel=1e-6)


def test_topk_correct_by_hand():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    targets = torch.tensor([2, 0, 0])
    # row0: top1=1 (miss), top2 {1,2} hit; row1 hit; row2: order 2,1,0 -> only at k=3
    assert topk_correct(logits, targets, ks=(1, 2, 5)) == [1, 2, 3]  # k=5 capped at 3 classes


class _CropModel(nn.Module):
    """Logits = the image's mean value on class 0 and 1 - mean on class 1: crops differ by value."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m * 10, (1 - m) * 10], dim=1)


def test_ten_crop_averages_probabilities():
    """One image, 10 crops: 4 of value 1 (p(class 1) = 1 - s, s = sigmoid(10)) and 6 of value 0
    (p(class 1) = s). Averaged softmax: p1 = 0.4(1 - s) + 0.6 s ~ 0.6, so the loss is -ln p1;
    averaging logits instead would give p1 = sigmoid(2) ~ 0.88 and fail."""
    crops = torch.zeros(1, 10, 3, 4, 4)
    crops[0, :4] = 1.0
    loader = [(crops, torch.tensor([1]), 0)]
    r = evaluate(_CropModel(), loader, torch.device("cpu"))
    assert r["top1"] == 100.0 and r["images"] == 1
    s = 1 / (1 + math.exp(-10))
    p1 = 0.4 * (1 - s) + 0.6 * s
    assert r["loss"] == pytest.approx(-math.log(p1), rel=1e-5)


def test_ema_update_by_hand():
    model = nn.Linear(1, 1, bias=False)
    nn.init.constant_(model.weight, 0.0)
    ema = ModelEMA(model, decay=0.5)
    model.weight.data.fill_(1.0)
    ema.update(model)  # d = min(0.5, 2/11) = 2/11: 0 * 2/11 + 1 * 9/11
    assert ema.module.weight.item() == pytest.approx(9 / 11)


def test_lookahead_by_hand():
    """every=2, decay=0.5: odd updates do nothing; an even one at progress p moves the slow weight
    by (1 - 0.5 p^3) towards the fast one and puts the fast one back there."""
    model = nn.Linear(1, 1, bias=False)
    nn.init.constant_(model.weight, 0.0)
    la = Lookahead(model, every=2, decay=0.5)
    model.weight.data.fill_(1.0)
    la.update(model, 1.0)  # update 1 of 2: nothing
    assert model.weight.item() == 1.0 and la.module.weight.item() == 0.0
    la.update(model, 1.0)  # d = 0.5: slow = 0 + 0.5 (1 - 0) = 0.5, fast = slow
    assert la.module.weight.item() == pytest.approx(0.5) and model.weight.item() == pytest.approx(0.5)
    model.weight.data.fill_(2.0)
    la.update(model, 0.0)
    la.update(model, 0.0)  # progress 0: d = 0, the slow weight takes the fast one as it is
    assert la.module.weight.item() == pytest.approx(2.0) and model.weight.item() == pytest.approx(2.0)
    other = Lookahead(nn.Linear(1, 1, bias=False), every=7, decay=0.1)
    other.load_state_dict(la.state_dict())
    assert (other.every, other.decay, other.updates) == (2, 0.5, 4) and other.module.weight.item() == 2.0


def test_ema_and_lookahead_together_is_one_line():
    sets = ["lookahead={every: 5, decay: 0.7738}"]
    cfg = resolve("resnet20_cifar", "airbench", sets=sets)
    assert cfg.lookahead == LookaheadConfig(every=5, decay=0.7738)
    with pytest.raises(UserError, match="^ema and lookahead"):
        resolve("resnet20_cifar", "airbench", sets=[*sets, "ema=0.999"])
    with pytest.raises(UserError, match="^ema and lookahead"):
        dataclasses.replace(cfg, ema=0.999)
    with pytest.raises(UserError, match=r"^lookahead must be .*got \{'every': 0, 'decay': 0.5\}$"):
        resolve("resnet20_cifar", "airbench", sets=["lookahead={every: 0, decay: 0.5}"])
    with pytest.raises(UserError, match=r"^lookahead must be .*got \{'every': 5\}$"):
        resolve("resnet20_cifar", "airbench", sets=["lookahead={every: 5}"])


# ---- checkpoints --------------------------------------------------------------------------------
def test_checkpoint_roundtrip_weights_only_and_rng(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    weights = nn.Linear(2, 2).state_dict()
    state = {
        "format": "convzoo-checkpoint-1",
        "rng": rng_state(),
        "model": weights,
        "epoch": 3,
        "name": "x",
        "lst": [1, 2.5],
    }
    expected = torch.rand(3)
    save_checkpoint(path, state)
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary left behind
    loaded = torch.load(path, weights_only=True)  # the only way we ever load
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected)
    with pytest.raises(UserError, match="'config' is missing"):  # load_checkpoint wants a whole run state
        load_checkpoint(path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = str(tmp_path / "f.bin")
    atomic_write(path, lambda f: f.write(b"old"))

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert open(path, "rb").read() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_bad_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable"):
        load_checkpoint(str(junk))


def test_places365_indoor_outdoor_vote():
    """Places365 demo rule: mean IO flag (0 indoor, 1 outdoor) over the top-10 classes, indoor < 0.5.
    Putting the probability mass on 10 indoor classes must vote indoor, on 10 outdoor ones outdoor,
    and 4 indoor + 6 outdoor gives 0.6 -> outdoor."""
    from convzoo.data.labels import places365_indoor_outdoor
    from convzoo.inference.predict import indoor_outdoor

    flags = places365_indoor_outdoor()
    indoor = [i for i, f in enumerate(flags) if f == 1]
    outdoor = [i for i, f in enumerate(flags) if f == 2]

    def probs(top):
        p = torch.full((365,), 1e-6)
        for rank, i in enumerate(top):
            p[i] = 1.0 - rank * 0.01
        return p

    assert indoor_outdoor(probs(indoor[:10]))["vote"] == "indoor"
    assert indoor_outdoor(probs(outdoor[:10]))["vote"] == "outdoor"
    mixed = indoor_outdoor(probs(indoor[:4] + outdoor[:6]))
    assert mixed["vote"] == "outdoor" and mixed["outdoor_score"] == pytest.approx(0.6)


def test_places365_weights_are_recognised_however_they_were_made():
    """Trained here (label_set), converted from the PyTorch or Caffe release or fetched from the
    catalog (dataset), or the places365 converter itself (source): each gets the indoor/outdoor vote."""
    from convzoo.inference.predict import is_places365
    from convzoo.weights import WeightSpec

    assert is_places365(WeightSpec(model="resnet18", num_classes=365, extra={"label_set": "places365"}))
    assert is_places365(
        WeightSpec(model="caffenet", num_classes=365, source="caffe", extra={"dataset": "places365"})
    )
    assert is_places365(WeightSpec(model="resnet18", num_classes=365, source="places365"))
    assert not is_places365(
        WeightSpec(model="resnet18", num_classes=1000, source="caffe", extra={"dataset": "imagenet1k"})
    )
