"""The settings of a training run as one typed, frozen object: `RunConfig`.

base.yaml is the documented key set and the defaults; this module is the schema: one field per
key of base.yaml (groups nested: data, optim, schedule, loss, finetune, lookahead) plus the
run's identity (`model`, `data_spec`, `recipe`, which no recipe sets), and every rule a value
must meet. A rule is checked when an object is built - by `recipes.resolve`, by `from_dict`
(a checkpoint's settings on resume) and by `dataclasses.replace` (a setting changed after
resolve: the resolved precision, a scaled schedule) - so a bad value is one line (UserError,
exit 2) naming its dotted key, before any data is read, and never a traceback mid-run.

Lists (milestones, mean, std, progressive) are held as tuples (the object is immutable);
`to_dict()` gives the plain form back (lists, dicts, numbers, strings), which is what
config.yaml and checkpoint.pt store: `torch.load(weights_only=True)` reads it, and a resumed
run builds its object from it again (`from_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ..errors import UserError

SCHEDULES = ("step", "plateau", "exponential", "cosine", "linear", "constant")
OPTIMIZERS = ("sgd", "rmsprop", "muon")
AUGMENT_PRESETS = ("alexnet", "vgg", "inception", "resnet", "cifar", "none")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# the settings that name the run rather than tune it: set by the command line, not by a recipe,
# so they are not in base.yaml
IDENTITY = ("model", "data_spec", "recipe")
# groups that are off by default (null in base.yaml): a recipe turns one on with a mapping,
# `--set NAME=null` turns it off again
OPTIONAL_GROUPS = ("lookahead",)

Check = Callable[[Any], bool]
Rule = tuple[str, Check, str]  # (field, check, what the value must be)


# ---- checks ---------------------------------------------------------------------------------------
def number(
    lo: float = -math.inf,
    hi: float = math.inf,
    lo_open: bool = False,
    optional: bool = False,
    integer: bool = False,
) -> Check:
    """A finite number (int or float; bool is not) in [lo, hi] ((lo, hi] when `lo_open`), or null."""

    def ok(v) -> bool:
        if v is None:
            return optional
        kinds = (int,) if integer else (int, float)
        return (
            isinstance(v, kinds)
            and not isinstance(v, bool)
            and (isinstance(v, int) or math.isfinite(v))  # (an int of 400 digits has no float)
            and (v > lo if lo_open else v >= lo)
            and v <= hi
        )

    return ok


def one_of(*allowed) -> Check:
    return lambda v: any(v is a or (type(v) is type(a) and v == a) for a in allowed)


def is_bool(v) -> bool:
    return isinstance(v, bool)


def optional_str(v) -> bool:
    return v is None or isinstance(v, str)


def sequence(v) -> bool:  # YAML gives lists; the object holds tuples
    return isinstance(v, (list, tuple))


def floats3(positive: bool) -> Check:
    each = number(0, 1e6, lo_open=True) if positive else number(-1e6, 1e6)
    return lambda v: sequence(v) and len(v) == 3 and all(each(x) for x in v)


def device_name(v) -> bool:  # a name, or what YAML makes of `--set device=N`: a CUDA device's index
    return (isinstance(v, str) and v != "") or number(0, integer=True)(v)


def size_schedule(v) -> bool:  # data.progressive: [min_size, until]
    return v is None or (
        sequence(v)
        and len(v) == 2
        and number(8, 4096, integer=True)(v[0])
        and number(0, 1, lo_open=True)(v[1])
    )


def check(obj, prefix: str) -> None:
    """The object's RULES in order; the first one broken is a one-line UserError."""
    for name, ok, want in obj.RULES:
        value = getattr(obj, name)
        if not ok(value):
            raise UserError(f"{prefix}{name} must be {want}, got {value!r}"[:200])


def freeze_lists(obj) -> None:
    """Lists given to a frozen object become tuples (it must not change under a reader)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, list):
            object.__setattr__(obj, f.name, tuple(value))


def plain(value):
    """A field's value in the plain form config.yaml and checkpoints store."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


class Group:
    """What every settings object has: its rules, the plain form, construction from it."""

    RULES: ClassVar[tuple[Rule, ...]] = ()
    PREFIX: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check(self, self.PREFIX)
        freeze_lists(self)

    def to_dict(self) -> dict:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, values):
        return cls(**known(cls, values, cls.PREFIX.rstrip(".")))


def known(cls, values, where: str) -> dict:
    """`values` as keyword arguments of `cls`: a mapping with exactly its fields, else UserError."""
    if not isinstance(values, dict):
        what = f"{where!r} is a group of settings, not a value" if where else "a config is a mapping"
        raise UserError(f"{what} (got {values!r})"[:200])
    names = [f.name for f in fields(cls)]
    prefix = f"{where}." if where else ""
    for key in values:
        if key not in names:
            raise UserError(f"config: unknown setting {prefix + str(key)!r}")
    missing = [n for n in names if n not in values]
    if missing:
        raise UserError(f"config: setting {prefix}{missing[0]} is missing")
    return dict(values)


# ---- the groups -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig(Group):
    augment: str
    input_size: int | None
    mean: tuple[float, ...]  # 3 numbers (checked)
    std: tuple[float, ...]
    max_train_images: int | None
    max_val_images: int | None
    val_split: float | None
    val_split_name: str | None
    in_memory: bool
    crop_padding: int | None
    crop_fill: str
    flip: str
    test_flip: bool
    test_shift: int
    progressive: tuple[int, float] | None

    PREFIX = "data."
    RULES = (
        ("augment", one_of(*AUGMENT_PRESETS), "alexnet, vgg, inception, resnet, cifar or none"),
        ("input_size", number(1, 4096, optional=True, integer=True), "null or an integer in 1..4096"),
        ("mean", floats3(False), "a list of 3 finite numbers"),
        ("std", floats3(True), "a list of 3 numbers > 0"),
        ("max_train_images", number(1, 10**12, optional=True, integer=True), "null or a positive integer"),
        ("max_val_images", number(1, 10**12, optional=True, integer=True), "null or a positive integer"),
        ("val_split", number(0, 1, lo_open=True, optional=True), "null or a fraction in (0, 1]"),
        ("val_split_name", optional_str, "null or a folder name"),
        ("in_memory", is_bool, "true or false"),
        ("crop_padding", number(0, 512, optional=True, integer=True), "null or an integer in 0..512"),
        ("crop_fill", one_of("zero", "reflect"), "zero or reflect"),
        ("flip", one_of("random", "alternate"), "random or alternate"),
        ("test_flip", is_bool, "true or false"),
        ("test_shift", number(0, 4, integer=True), "an integer 0..4"),
        ("progressive", size_schedule, "null or [min_size 8..4096, until in (0, 1]]"),
    )


@dataclass(frozen=True)
class OptimConfig(Group):
    name: str
    lr: float
    lr_scaling: str
    lr_base_batch: int
    momentum: float
    nesterov: bool
    weight_decay: float
    alpha: float
    eps: float
    norm_bias_lr_mult: float
    muon_lr: float
    muon_momentum: float

    PREFIX = "optim."
    RULES = (
        ("name", one_of(*OPTIMIZERS), "sgd, rmsprop or muon"),
        ("lr", number(0, 1e6, lo_open=True), "a finite number > 0"),
        ("lr_scaling", one_of("none", "linear"), "none or linear"),
        ("lr_base_batch", lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
        ("momentum", number(0, 1), "a number in 0..1"),
        ("nesterov", is_bool, "true or false"),
        ("weight_decay", number(0, 1), "a number in 0..1"),
        ("alpha", number(0, 1), "a number in 0..1"),
        ("eps", number(0, 1e6, lo_open=True), "a finite number > 0"),
        ("norm_bias_lr_mult", number(0, 1e6, lo_open=True), "a finite number > 0"),
        ("muon_lr", number(0, 1e6, lo_open=True), "a finite number > 0"),
        ("muon_momentum", number(0, 1), "a number in 0..1"),
    )


@dataclass(frozen=True)
class ScheduleConfig(Group):
    name: str
    milestones: tuple[float, ...]
    gamma: float
    every: float
    patience: int
    min_lr: float
    warmup_epochs: float
    warmup_factor: float
    epochs: float | None

    PREFIX = "schedule."
    RULES = (
        ("name", one_of(*SCHEDULES), "one of " + ", ".join(SCHEDULES)),
        ("milestones", lambda v: sequence(v) and all(number(0, 10**9)(m) for m in v), "a list of epochs"),
        ("gamma", number(0, 1e6, lo_open=True), "a finite number > 0"),
        ("every", number(0, 10**9, lo_open=True), "a number of epochs > 0"),  # scaled: 0.2 of 10
        ("patience", number(0, 10**9, integer=True), "an integer >= 0"),
        ("min_lr", number(0, 1e6), "a finite number >= 0"),
        ("warmup_epochs", number(0, 10**9), "a number of epochs >= 0"),
        ("warmup_factor", number(0, 1e6), "a finite number >= 0"),
        ("epochs", number(0, 10**7, lo_open=True, optional=True), "null or a number of epochs > 0"),
    )


@dataclass(frozen=True)
class LossConfig(Group):
    label_smoothing: float
    aux_weight: float

    PREFIX = "loss."
    RULES = (
        ("label_smoothing", number(0, 1), "a number in 0..1"),
        ("aux_weight", number(0, 1e6), "a finite number >= 0"),
    )


@dataclass(frozen=True)
class FinetuneConfig(Group):
    weights: str | None
    freeze: str | None
    head_lr_mult: float

    PREFIX = "finetune."
    RULES = (
        ("weights", optional_str, "null or a string"),
        ("freeze", optional_str, "null or a string"),
        ("head_lr_mult", lambda v: isinstance(v, (int, float)) and v > 0, "a positive number"),
    )


@dataclass(frozen=True)
class LookaheadConfig(Group):
    every: int
    decay: float

    def __post_init__(self) -> None:
        if not (number(1, 10**6, integer=True)(self.every) and number(0, 1)(self.decay)):
            raise UserError(lookahead_error(self.to_dict()))

    @classmethod
    def from_dict(cls, values):
        if not (isinstance(values, dict) and set(values) == {"every", "decay"}):
            raise UserError(lookahead_error(values))
        return cls(**values)


def lookahead_error(value) -> str:
    return f"lookahead must be null or {{every: steps >= 1, decay: 0..1}}, got {value!r}"[:200]


# ---- the run --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig(Group):
    """Every setting of a training run (base.yaml) and what it trains (`model`, `data_spec`,
    `recipe`), checked. Fields in config.yaml's order."""

    model: str
    data_spec: str
    epochs: int
    batch_size: int
    seed: int
    device: str | int
    precision: str
    channels_last: bool | str
    compile: bool | str
    workers: int
    accum_steps: int
    sync_bn: bool
    checkpoint_minutes: float
    time_limit_minutes: float | None
    val_every: int
    tensorboard: bool | str
    data: DataConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    loss: LossConfig
    clip_grad_norm: float | None
    ema: float | None
    lookahead: LookaheadConfig | None
    finetune: FinetuneConfig
    recipe: str

    GROUPS: ClassVar[dict[str, type[Group]]] = {
        "data": DataConfig,
        "optim": OptimConfig,
        "schedule": ScheduleConfig,
        "loss": LossConfig,
        "finetune": FinetuneConfig,
        "lookahead": LookaheadConfig,
    }
    RULES = (
        ("model", lambda v: isinstance(v, str) and v != "", "a model name"),
        ("data_spec", lambda v: isinstance(v, str) and v != "", "a --data SPEC"),
        ("epochs", number(1, 10**7, integer=True), "an integer in 1..10^7"),
        ("batch_size", number(1, 10**6, integer=True), "an integer in 1..10^6"),
        # numpy's seed takes 0..2^32-1; checked before any data is read
        ("seed", number(0, 2**32 - 1, integer=True), "an integer in 0..4294967295"),
        ("device", device_name, "auto or a device (cpu, cuda, cuda:N, or N: a CUDA device's index)"),
        ("precision", one_of(*PRECISIONS), "auto, fp32, bf16 or fp16"),
        ("channels_last", one_of("auto", True, False), "auto, true or false"),
        ("compile", one_of("auto", True, False), "auto, true or false"),
        ("workers", number(0, integer=True), ">= 0"),
        ("accum_steps", lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
        ("sync_bn", is_bool, "true or false"),
        ("checkpoint_minutes", lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
        (
            "time_limit_minutes",
            number(0, 10**9, lo_open=True, optional=True),
            "null or a number of minutes > 0",
        ),
        ("val_every", number(1, integer=True), "a positive integer"),
        ("tensorboard", one_of("auto", True, False), "auto, true or false"),
        (
            "clip_grad_norm",
            lambda v: v is None or (isinstance(v, (int, float)) and v > 0),
            "null or positive",
        ),
        ("ema", lambda v: v is None or (isinstance(v, float) and 0 < v < 1), "null or a decay in (0, 1)"),
        ("recipe", lambda v: isinstance(v, str) and v != "", "a recipe name or file"),
    )

    def __post_init__(self) -> None:
        for name, kind in self.GROUPS.items():
            value = getattr(self, name)
            if not isinstance(value, kind) and not (value is None and name in OPTIONAL_GROUPS):
                raise TypeError(f"RunConfig.{name} takes a {kind.__name__}, not {type(value).__name__}")
        super().__post_init__()
        if self.val_every != 1 and self.schedule.name == "plateau":
            raise UserError(
                f"val_every {self.val_every} leaves the plateau schedule without a validation error every "
                "epoch: use val_every 1 or another schedule"
            )
        if self.ema is not None and self.lookahead is not None:
            raise UserError("ema and lookahead are two ways of averaging the weights; set one of them")

    @classmethod
    def from_dict(cls, values) -> RunConfig:
        """The object of a plain config (resolved settings, or a checkpoint's `config`): every key
        of base.yaml and of IDENTITY, no other. A run saved before a setting existed: pass it
        through `recipes.with_later_settings` first."""
        args = known(cls, values, "")
        for name, kind in cls.GROUPS.items():
            if args[name] is not None or name not in OPTIONAL_GROUPS:
                args[name] = kind.from_dict(args[name])
        return cls(**args)

    @property
    def lookahead_plain(self) -> dict | None:
        """`lookahead` as summary.json and config.yaml write it."""
        return self.lookahead.to_dict() if self.lookahead is not None else None


# ---- the plain form, by dotted key ------------------------------------------------------------------
def dotted_items(values: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(`optim.lr`, value) for every leaf of a plain config (or a part of one)."""
    for key, value in values.items():
        if isinstance(value, dict):
            yield from dotted_items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def dotted_get(values: dict, dotted: str):
    """The value at `optim.lr` in a plain config; None where there is none."""
    node: object = values
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def field_tree(cls: type = RunConfig) -> dict:
    """{field: None, group: {field: None, ...}} of a settings class, the optional groups as leaves
    (they are null in base.yaml): what tests compare with base.yaml's keys."""
    groups = getattr(cls, "GROUPS", {})
    return {
        f.name: field_tree(groups[f.name]) if f.name in groups and f.name not in OPTIONAL_GROUPS else None
        for f in fields(cls)
    }
