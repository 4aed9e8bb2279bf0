"""Optimizers and the papers' learning-rate schedules.

- SGD with momentum (and optional Nesterov), weight decay on every parameter as the papers did.
- RMSProp as the Inception papers configure it (decay 0.9, epsilon 1.0). Deviation: PyTorch adds
  epsilon outside the square root (TF adds it inside); with eps=1.0 the steps differ slightly.
- Schedules, as a factor of the base lr at a (fractional) epoch:
  step (x gamma at each milestone epoch: ResNet), plateau (x gamma when the validation error has
  not improved for `patience` epochs: AlexNet, VGG), exponential (x gamma every `every` epochs:
  GoogLeNet 0.96/8, Inception 0.94/2), cosine (to min_lr at the last epoch), linear (from the
  end of warmup to min_lr at the last epoch: with warmup, the one-cycle triangle), constant;
  optional linear warmup over the first `warmup_epochs` (updated every step).
- Weight averaging: ModelEMA (Polyak averaging) and Lookahead (airbench's schedule); the run
  validates and saves the averaged weights (`.module`) of either.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..errors import UserError

SCHEDULES = ("step", "plateau", "exponential", "cosine", "linear", "constant")


def build_optimizer(model: nn.Module, cfg: dict, params: list | None = None) -> torch.optim.Optimizer:
    """`params`: param groups (each may carry an `lr_mult`); default all trainable parameters."""
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    if cfg["name"] == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg["lr"],
            momentum=cfg["momentum"],
            nesterov=cfg["nesterov"],
            weight_decay=cfg["weight_decay"],
        )
    if cfg["name"] == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=cfg["lr"],
            alpha=cfg["alpha"],
            eps=cfg["eps"],
            momentum=cfg["momentum"],
            weight_decay=cfg["weight_decay"],
        )
    raise UserError(f"unknown optimizer {cfg['name']!r}; choose sgd or rmsprop")


class LRSchedule:
    """Sets the lr of every param group from the epoch; its state is plain numbers (for checkpoints)."""

    def __init__(self, optimizer: torch.optim.Optimizer | None, cfg: dict, base_lr: float, epochs: int):
        if cfg["name"] not in SCHEDULES:
            raise UserError(f"unknown schedule {cfg['name']!r}; choose from {', '.join(SCHEDULES)}")
        self.optimizer, self.cfg, self.base_lr, self.epochs = optimizer, cfg, float(base_lr), int(epochs)
        # plateau state
        self.plateau_scale, self.best_error, self.bad_epochs = 1.0, math.inf, 0

    def factor(self, epoch: float) -> float:
        c = self.cfg
        if c["name"] == "step":
            f = c["gamma"] ** sum(1 for m in c["milestones"] if epoch >= m)
        elif c["name"] == "exponential":
            f = c["gamma"] ** math.floor(epoch / c["every"])
        elif c["name"] == "cosine":
            floor = c["min_lr"] / self.base_lr if self.base_lr else 0.0
            f = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))
        elif c["name"] == "linear":  # from lr at the end of warmup down to min_lr at the last epoch
            floor = c["min_lr"] / self.base_lr if self.base_lr else 0.0
            span = max(self.epochs - c["warmup_epochs"], 1e-9)
            f = floor + (1 - floor) * min(1.0, max(0.0, (self.epochs - epoch) / span))
        elif c["name"] == "plateau":
            f = self.plateau_scale
        else:
            f = 1.0
        if epoch < c["warmup_epochs"]:
            w = c["warmup_factor"]
            f *= w + (1 - w) * epoch / c["warmup_epochs"]
        return f

    def lr_at(self, epoch: float) -> float:
        return self.base_lr * self.factor(epoch)

    def position(self, epoch: float) -> float:
        """Where in the schedule training at `epoch` is (a time budget reads it further on)."""
        return epoch

    def step(self, epoch: float) -> float:
        """Set the lr for training at fractional `epoch` (epoch index + batch / batches)."""
        lr = self.lr_at(epoch)
        assert self.optimizer is not None, "LRSchedule.step needs the optimizer"
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)  # lr_mult: fine-tuning's head groups
        return lr

    def epoch_end(self, val_error: float) -> None:
        """Feed the validation error (plateau rule: a strictly lower error resets the count)."""
        if self.cfg["name"] != "plateau":
            return
        if val_error < self.best_error:
            self.best_error, self.bad_epochs = val_error, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.cfg["patience"]:
            self.plateau_scale *= self.cfg["gamma"]
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {
            "plateau_scale": self.plateau_scale,
            "best_error": self.best_error,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.best_error = float(state["best_error"])
        self.bad_epochs = int(state["bad_epochs"])


class ModelEMA:
    """Polyak averaging (exponential moving average) of a model's parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float):
        import copy

        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module, progress: float = 0.0) -> None:  # (progress: Lookahead's)
        self.updates += 1
        # the usual warm start: average over the steps seen so far until 1/(1-decay) steps
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        own = self.module.state_dict()
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                own[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                own[k].copy_(v)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        self.module.load_state_dict(state["model"])


class Lookahead:
    """Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back") with
    airbench's schedule (Jordan 2024): every `every` optimizer steps the slow weights move towards
    the fast ones, slow += (1 - d) (fast - slow), and training continues from the slow weights;
    d = decay x progress^3 (progress 0..1 through the schedule), so early on the slow weights
    follow the fast ones and late in the run they average them. BatchNorm's running statistics
    go along (every floating-point entry of the state dict). Validation and the weights files use
    the slow weights - what airbench's last step copies into the model."""

    def __init__(self, model: nn.Module, every: int, decay: float):
        import copy

        self.every, self.decay = int(every), float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module, progress: float) -> None:
        self.updates += 1
        if self.updates % self.every:
            return
        d = self.decay * min(1.0, max(0.0, progress)) ** 3
        slow = self.module.state_dict()
        for k, fast in model.state_dict().items():
            if fast.dtype.is_floating_point:
                slow[k].lerp_(fast.detach(), 1 - d)
                fast.copy_(slow[k])
            else:
                slow[k].copy_(fast)

    def state_dict(self) -> dict:
        return {
            "every": self.every,
            "decay": self.decay,
            "updates": self.updates,
            "model": self.module.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.every, self.decay, self.updates = (
            int(state["every"]),
            float(state["decay"]),
            int(state["updates"]),
        )
        self.module.load_state_dict(state["model"])
