"""Fine-tuning: start from weights, a new head, frozen paper stages, a head learning-rate multiplier,
and a reproducible train/val split of a single class-folder tree.

- Weights (`finetune.weights`): a convzoo weights file for the same model. When its class count
  differs from the data's, `reset_classifier` replaces the classifier and the auxiliary heads
  (freshly initialised), and the run says so.
- Freezing (`finetune.freeze`): a paper row of `paper_stages()` (`conv4_x`, `inception_4e`, `fc7`)
  or a submodule path (`features`). Everything the network runs up to the next paper row is frozen
  (the live model's execution order, recorded with meta tensors in place of its own), so a
  stage's BN and ReLU that sit between rows (ResNet's `bn1` after `conv1`) go with it. Auxiliary
  heads do not run in eval mode and stay trainable. Frozen BatchNorm layers stay in eval mode
  during training (their running statistics are the pretrained ones) - a forward pre-hook, so
  `model.train()` cannot undo it.
- Head learning rate (`finetune.head_lr_mult`): the parameters `reset_classifier` replaces get their
  own param group with `lr_mult`, which `LRSchedule` multiplies into the scheduled lr.
- Split (`data.val_split`): a folder with class sub-folders and no train/ or val/ is split per
  class (stratified) with a generator seeded by the run's seed; the split is written to the run
  folder (`split.csv`) and recorded in the WeightSpec, so `convzoo eval` rebuilds the same val set.
"""

from __future__ import annotations

import csv
import io

import torch
import torch.nn as nn

from ..data.datasets import resolve_spec
from ..data.source import Split, folder_layout
from ..errors import UserError
from ..factory import create_model
from ..hub import resolve_weights
from ..layers import ZooModel
from ..recipes.config import OptimConfig, RunConfig
from ..registry import build, model_info
from ..weights import read_spec


# ---- model: weights, head, freezing, param groups ------------------------------------------------
def as_zoo_model(model: nn.Module, name: str) -> ZooModel:
    """`model` as the ZooModel contract fine-tuning relies on (declared head, paper stages)."""
    if not isinstance(model, ZooModel):
        raise UserError(f"{name} is a {type(model).__name__}, not a convzoo model: it declares no head")
    return model


def head_parameter_names(model: nn.Module, model_name: str) -> list[str]:
    """Names of the parameters `reset_classifier` replaces: those of the classifier layers the
    live model declares (`head_paths`: classifier and auxiliary heads)."""
    heads = as_zoo_model(model, model_name).head_paths()
    return [n for n, _ in model.named_parameters() if any(n.startswith(f"{h}.") for h in heads)]


def execution_order(model: nn.Module, input_size: int) -> list[str]:
    """Module names of the live `model` in the order an eval-mode forward first calls them. The
    forward runs with meta tensors in place of its parameters and buffers (`functional_call`): no
    arithmetic, no copy of the weights, and the model itself, options and head as they are."""
    order: list[str] = []
    handles = [
        mod.register_forward_pre_hook(lambda _m, _i, n=name: order.append(n) if n not in order else None)
        for name, mod in model.named_modules()
        if name
    ]
    tensors = {
        name: torch.empty_like(t, device="meta")
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            torch.func.functional_call(
                model, tensors, (torch.empty(1, 3, input_size, input_size, device="meta"),)
            )
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return order


def _inside(name: str, path: str) -> bool:
    return path == "" or name == path or name.startswith(path + ".")


def modules_to_freeze(model: nn.Module, model_name: str, stage: str, order: list[str]) -> list[str]:
    """Names of the modules run before the paper row that follows `stage` (see module docstring)."""
    stages = as_zoo_model(model, model_name).paper_stages()
    if stage in stages:
        path = stages[stage]
    else:
        try:
            model.get_submodule(stage)
            path = stage
        except AttributeError:
            raise UserError(
                f"--freeze {stage}: not a paper stage of {model_name} ({', '.join(stages)}) nor a submodule"
            ) from None
    hits = [i for i, n in enumerate(order) if _inside(n, path)]
    if not hits:
        raise UserError(f"--freeze {stage}: {path} does not run at inference (an auxiliary head?)")
    others = [p for p in stages.values() if not _inside(p, path) and not _inside(path, p)]
    end = next(
        (i for i in range(max(hits) + 1, len(order)) if any(_inside(order[i], p) for p in others)),
        max(hits) + 1,
    )
    return order[:end]


def _keep_eval(module: nn.Module, _inputs) -> None:
    module.train(False)


def freeze(model: nn.Module, names: list[str]) -> int:
    """requires_grad=False for the modules' own parameters; returns how many (elements).
    `keep_frozen_bn_eval` then keeps their BatchNorm layers in eval mode."""
    count = 0
    for name in names:
        for p in model.get_submodule(name).parameters(recurse=False):
            p.requires_grad_(False)
            count += p.numel()
    return count


def keep_frozen_bn_eval(model: nn.Module) -> None:
    """BatchNorm layers whose parameters are frozen stay in eval mode (running statistics fixed),
    whatever `model.train()` says. Called by fit() after any SyncBatchNorm conversion, which
    replaces the BN modules (and would drop a hook put on them earlier)."""
    for m in model.modules():
        params = list(m.parameters(recurse=False))
        if (
            isinstance(m, nn.modules.batchnorm._BatchNorm)
            and params
            and not any(p.requires_grad for p in params)
        ):
            m.eval()
            m.register_forward_pre_hook(_keep_eval)


def prepare_model(cfg: RunConfig, num_classes: int, log) -> tuple[nn.Module, list[dict] | None]:
    """The model of a run (fresh or from `finetune.weights`) and its optimizer param groups
    (None: all parameters, one group)."""
    ft, name = cfg.finetune, cfg.model
    if not ft.weights:
        net = build(name, num_classes=num_classes)
    else:
        weights = resolve_weights(ft.weights)  # a file, or a catalog name fetched on first use
        spec = read_spec(weights)
        if spec.channel_order != "RGB" or spec.pixel_scale != 1.0:
            # the training pipeline feeds RGB in [0, 1] normalised by the recipe's mean/std
            raise UserError(
                f"--weights {weights} expect Caffe's input ({spec.channel_order}, pixels "
                f"0-{spec.pixel_scale:g}); fine-tuning trains on RGB 0-1 input and would not "
                f"start from what the weights learned; evaluate or predict with them instead"
            )
        net = create_model(name, weights=weights)
        if spec.num_classes != num_classes:
            as_zoo_model(net, name).reset_classifier(num_classes)
            heads = sorted({n.rsplit(".", 1)[0] for n in head_parameter_names(net, name)})
            log(
                f"fine-tuning from {weights}: {spec.num_classes} classes there, {num_classes} here; "
                f"re-initialised {', '.join(heads)}"
            )
        else:
            log(f"fine-tuning from {weights} ({num_classes} classes, classifier kept)")
    if ft.freeze:
        names = modules_to_freeze(net, name, ft.freeze, execution_order(net, model_info(name).input_size))
        n = freeze(net, names)
        total = sum(p.numel() for p in net.parameters())
        log(f"frozen up to {ft.freeze}: {n:,} of {total:,} parameters ({len(names)} modules)")
    return net, param_groups(net, name, num_classes, float(ft.head_lr_mult), cfg.optim)


def param_groups(
    net: nn.Module, name: str, num_classes: int, head_mult: float, optim: OptimConfig
) -> list[dict] | None:
    """The optimizer's param groups (None: one group of every trainable parameter).

    `head_mult` scales the lr of the classifier and auxiliary heads (fine-tuning);
    `optim.norm_bias_lr_mult` scales the lr of BatchNorm shifts and divides their weight decay
    by the same factor, so the decay per step stays what it is elsewhere (airbench's 64x: with a
    BatchNorm scale fixed at 1 the shifts are the only per-channel parameters, and they move
    slowly at the lr the convolutions want)."""
    norm_mult = float(optim.norm_bias_lr_mult)
    if head_mult == 1.0 and norm_mult == 1.0:
        return None
    head = set(head_parameter_names(net, name)) if head_mult != 1.0 else set()
    shifts = {
        f"{prefix}.bias" if prefix else "bias"
        for prefix, m in net.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None
    }
    groups: dict[tuple[float, float], dict] = {}
    for n, p in net.named_parameters():
        if not p.requires_grad:
            continue
        norm = norm_mult if n in shifts else 1.0
        key = ((head_mult if n in head else 1.0) * norm, norm)
        group = groups.setdefault(
            key, {"params": [], "lr_mult": key[0], "weight_decay": optim.weight_decay / norm}
        )
        group["params"].append(p)
    return list(groups.values())


# ---- a single class-folder tree, split reproducibly (data/source.py does it) -----------------------
def is_single_tree(data_spec: str) -> bool:
    """A folder (or folder:PATH) whose class sub-folders are not under train/ and val/."""
    ds = resolve_spec(data_spec)
    return ds.kind == "folder" and folder_layout(ds.root) == "single-tree"


def split_csv(split: Split) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "class", "split"])
    for path, label, part in split.rows:
        w.writerow([path, label, split.train.classes[label], part])
    return buf.getvalue()
