"""Optimizers and the papers' learning-rate schedules.

- SGD with momentum (and optional Nesterov), weight decay on every parameter as the papers did.
- RMSProp as the Inception papers configure it (decay 0.9, epsilon 1.0). Deviation: PyTorch adds
  epsilon outside the square root (TF adds it inside); with eps=1.0 the steps differ slightly.
- Muon (Jordan et al. 2024) for the convolution filters and SGD for the other parameters, the
  split and the update of airbench94_muon (`MuonSGD`).
- Schedules, as a factor of the base lr at a (fractional) epoch:
  step (x gamma at each milestone epoch: ResNet), plateau (x gamma when the validation error has
  not improved for `patience` epochs: AlexNet, VGG), exponential (x gamma every `every` epochs:
  GoogLeNet 0.96/8, Inception 0.94/2), cosine (to min_lr at the last epoch), linear (from the
  end of warmup to min_lr at the last epoch: with warmup, the one-cycle triangle), constant;
  optional linear warmup over the first `warmup_epochs` (updated every step). The epoch numbers
  are for the recipe's own length (`schedule.epochs`, null: the recipe's `epochs`); a run of
  another length gets them scaled to the same fractions of the run (`fit_to_run`).
- Weight averaging: ModelEMA (Polyak averaging) and Lookahead (airbench's schedule); the run
  validates and saves the averaged weights (`.module`) of either.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
from torch.optim.sgd import sgd

from ..errors import UserError
from ..recipes.config import OptimConfig, ScheduleConfig


def build_optimizer(
    model: nn.Module, optim: OptimConfig, params: list | None = None, lr: float | None = None
) -> torch.optim.Optimizer:
    """`params`: param groups (each may carry an `lr_mult`); default all trainable parameters.
    `lr`: the base lr when it is not `optim.lr` (scaled to the global batch). Each group starts
    at lr x its lr_mult (then LRSchedule sets it every step)."""
    params = (
        params if params is not None else [{"params": [p for p in model.parameters() if p.requires_grad]}]
    )
    lr = optim.lr if lr is None else lr
    optimizer = _optimizer(model, optim, params, lr)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
    return optimizer


def _optimizer(model: nn.Module, optim: OptimConfig, params: list[dict], lr: float) -> torch.optim.Optimizer:
    if optim.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=optim.momentum,
            nesterov=optim.nesterov,
            weight_decay=optim.weight_decay,
        )
    if optim.name == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=lr,
            alpha=optim.alpha,
            eps=optim.eps,
            momentum=optim.momentum,
            weight_decay=optim.weight_decay,
        )
    # muon (the config admits no other name)
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise UserError(
            f"optim.name muon keeps every convolution's filters at a fixed norm, which only a network "
            f"with BatchNorm after its convolutions can afford; {type(model).__name__} has none: use sgd"
        )
    return MuonSGD(
        filter_groups(params, optim.muon_lr / lr),
        lr=lr,
        momentum=optim.momentum,
        nesterov=optim.nesterov,
        weight_decay=optim.weight_decay,
        muon_momentum=optim.muon_momentum,
    )


# ---- Muon ----------------------------------------------------------------------------------------
# Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"
# (kellerjordan.github.io/posts/muon): momentum SGD whose update matrix is replaced by the nearest
# semi-orthogonal matrix, U V^T of its SVD U S V^T, approximated by a few Newton-Schulz steps. The
# quintic's coefficients push small singular values up fast instead of converging: the result's
# singular values land near 1 (about 0.7-1.2), which trains as well as U V^T.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 3  # airbench94_muon's


def orthogonalize(update: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """About U V^T of a 2-D `update` (U S V^T its SVD), by Newton-Schulz iteration in fp32.

    In fp32, not bf16 as torch.optim.Muon: CPUs without bf16 units emulate it."""
    a, b, c = NS_COEFFICIENTS
    x = update / (update.norm() + 1e-7)  # spectral norm <= Frobenius norm = 1: where NS converges
    tall = x.size(0) > x.size(1)
    x = x.T if tall else x  # iterate with the smaller Gram matrix
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def filter_groups(groups: list[dict], muon_lr_ratio: float) -> list[dict]:
    """Each param group split in two: its convolution filters (4-D parameters), which Muon
    updates at `muon_lr_ratio` x the group's lr, and the rest (biases, BatchNorm shifts, the
    linear classifier), which SGD updates. airbench94_muon's split."""
    out = []
    for group in groups:
        settings = {k: v for k, v in group.items() if k != "params"}
        filters = [p for p in group["params"] if p.ndim == 4]
        others = [p for p in group["params"] if p.ndim != 4]
        if filters:
            lr_mult = settings.get("lr_mult", 1.0) * muon_lr_ratio
            out.append({**settings, "params": filters, "orthogonalize": True, "lr_mult": lr_mult})
        if others:
            out.append({**settings, "params": others, "orthogonalize": False})
    return out


class MuonSGD(torch.optim.Optimizer):
    """Muon for the param groups marked `orthogonalize`, SGD (torch.optim.sgd.sgd) for the others.

    The Muon update is airbench94_muon's (Jordan 2024): Nesterov momentum (`muon_momentum`), the
    update flattened to out_channels x (in_channels kh kw) and orthogonalized, and the filter
    bank rescaled to norm sqrt(out_channels) before each step instead of weight decay. With
    BatchNorm after the convolution the filters' scale changes nothing the network computes,
    and a fixed scale makes the lr a fixed angle per step; a convolution without BatchNorm after
    it would lose the scale it needs, so `muon` is for networks normalised after every
    convolution (train refuses it for a model without BatchNorm)."""

    def __init__(
        self,
        groups: list[dict],
        lr: float,
        momentum: float,
        nesterov: bool,
        weight_decay: float,
        muon_momentum: float,
    ):
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay}
        super().__init__(groups, {**defaults, "orthogonalize": False})
        self.muon_momentum = float(muon_momentum)

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is None, "MuonSGD takes no closure"
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["orthogonalize"]:
                for p in params:
                    self._muon_step(p, p.grad, group["lr"], group["nesterov"])
                continue
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            sgd(
                params,
                [p.grad for p in params],
                buffers,
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                lr=group["lr"],
                dampening=0.0,
                nesterov=group["nesterov"],
                maximize=False,
            )
            for p, buffer in zip(params, buffers):  # sgd() creates the buffers of a first step
                self.state[p]["momentum_buffer"] = buffer

    def _muon_step(self, p: torch.Tensor, grad: torch.Tensor, lr: float, nesterov: bool) -> None:
        m = self.muon_momentum
        buffer = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
        buffer.mul_(m).add_(grad)
        update = grad.add(buffer, alpha=m) if nesterov else buffer
        p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
        p.add_(orthogonalize(update.reshape(len(p), -1)).reshape(p.shape), alpha=-lr)


# ---- a schedule over the run's length ------------------------------------------------------------
# The settings that count epochs. A recipe writes them for its own length (the paper's epoch numbers
# at the paper's epoch count); a run of another length gets them scaled to the same fractions of
# the run, so `--epochs 5` decays the lr where a 164-epoch run would, relatively, instead of never.
EPOCH_SETTINGS = ("milestones", "warmup_epochs", "every", "patience")


def fit_to_run(
    schedule: ScheduleConfig, epochs: int, length: int | float, fixed: frozenset[str] = frozenset()
) -> tuple[ScheduleConfig, str | None]:
    """(schedule, note): `schedule`'s epoch settings, written for a run of `length` epochs, scaled
    to a run of `epochs`; `fixed` names settings given for this run (by --set) that stay as they
    are. The result records `epochs` as the length its numbers are for (`schedule.epochs`); `note`
    says in one line what changed and why (None when nothing did)."""
    if not length or length == epochs:
        return dataclasses.replace(schedule, epochs=epochs), None
    r = epochs / length
    current = {  # the settings the schedule reads (a step schedule has no use for `every`)
        "milestones": schedule.milestones if schedule.name == "step" else None,
        "every": schedule.every if schedule.name == "exponential" else None,
        "patience": schedule.patience if schedule.name == "plateau" else None,
        "warmup_epochs": schedule.warmup_epochs or None,
    }
    scaled: dict = {}
    changes = []
    for key in EPOCH_SETTINGS:
        old = current[key]
        if key in fixed or old is None:
            continue
        new: tuple | float | int
        if isinstance(old, tuple):  # milestones
            new = tuple(_round(m * r) for m in old)
        elif key == "patience":  # whole epochs without improvement; 0 stays 0
            new = max(1, round(old * r)) if old else 0
        else:
            new = _round(old * r)
        if new != old:
            scaled[key] = new
            changes.append(f"{key} {_show(old)} -> {_show(new)}")
    out = dataclasses.replace(schedule, epochs=epochs, **scaled)
    if not changes:
        return out, None
    note = (
        f"schedule: {schedule.name} {', '.join(changes)} (the recipe's numbers are for {_show(length)} "
        f"epochs; scaled by {_show(epochs)}/{_show(length)} to the same fractions of this "
        f"{_show(epochs)}-epoch run; --set schedule.KEY=... sets one for this run as it is)"
    )
    return out, note


def _round(x: float) -> float | int:
    x = round(x, 4)
    return int(x) if x == int(x) else x


def _show(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


class LRSchedule:
    """Sets the lr of every param group from the epoch; its state is plain numbers (for checkpoints)."""

    def __init__(
        self, optimizer: torch.optim.Optimizer | None, schedule: ScheduleConfig, base_lr: float, epochs: int
    ):
        self.optimizer, self.cfg, self.base_lr, self.epochs = optimizer, schedule, float(base_lr), int(epochs)
        # plateau state
        self.plateau_scale, self.best_error, self.bad_epochs = 1.0, math.inf, 0

    def factor(self, epoch: float) -> float:
        c = self.cfg
        if c.name == "step":
            f = c.gamma ** sum(1 for m in c.milestones if epoch >= m)
        elif c.name == "exponential":
            f = c.gamma ** math.floor(epoch / c.every)
        elif c.name == "cosine":
            floor = c.min_lr / self.base_lr if self.base_lr else 0.0
            f = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))
        elif c.name == "linear":  # from lr at the end of warmup down to min_lr at the last epoch
            floor = c.min_lr / self.base_lr if self.base_lr else 0.0
            span = max(self.epochs - c.warmup_epochs, 1e-9)
            f = floor + (1 - floor) * min(1.0, max(0.0, (self.epochs - epoch) / span))
        elif c.name == "plateau":
            f = self.plateau_scale
        else:
            f = 1.0
        if epoch < c.warmup_epochs:
            w = c.warmup_factor
            f *= w + (1 - w) * epoch / c.warmup_epochs
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
        if self.cfg.name != "plateau":
            return
        if val_error < self.best_error:
            self.best_error, self.bad_epochs = val_error, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.cfg.patience:
            self.plateau_scale *= self.cfg.gamma
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
