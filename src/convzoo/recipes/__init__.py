"""Training recipes: one YAML file per paper, layered over `base.yaml`.

Resolution order (later wins): base.yaml -> the recipe (by name or file) -> command-line flags
(`--epochs`, `--lr`, ...) -> `--set key=value` (dotted keys, values parsed with yaml.safe_load).
Every key must exist in base.yaml, so a typo is an error rather than a silently ignored setting.
`resolve` returns the run's `RunConfig` (config.py: the typed object and its rules).
"""

from __future__ import annotations

import copy
import fnmatch
import os
from importlib import resources

import yaml

from ..errors import UserError
from ..untrusted import MAX_NESTING, check_flow_nesting, check_nesting
from .config import OPTIONAL_GROUPS, RunConfig

# The default recipe of each model family: first matching glob wins.
FAMILY_RECIPES = [
    ("vgg8_cifar", "airbench"),  # airbench's network: its training recipe
    ("*_cifar", "resnet_cifar"),
    ("alexnet*", "alexnet"),
    ("nin*", "alexnet"),  # NiN (Lin et al. 2013) trained with AlexNet's protocol
    ("vgg*", "vgg"),
    ("googlenet*", "googlenet"),
    ("bn_inception", "googlenet"),
    ("inception_v3*", "inception_v3"),
    ("inception_v4*", "inception_v4"),
    ("inception_resnet*", "inception_v4"),
    ("*", "resnet"),  # ResNet, pre-act ResNet, ResNeXt and anything else
]


def recipe_names() -> list[str]:
    return sorted(
        p.name[:-5]
        for p in resources.files(__package__).iterdir()
        if p.name.endswith(".yaml") and p.name != "base.yaml"
    )


def default_recipe(model_name: str) -> str:
    return next(recipe for pattern, recipe in FAMILY_RECIPES if fnmatch.fnmatchcase(model_name, pattern))


def _read_yaml(text: str, where: str) -> dict:
    check_flow_nesting(text, where)
    try:
        data = yaml.safe_load(text)
    except RecursionError:  # PyYAML's composer recurses once per nested list or mapping
        raise UserError(f"{where}: nested more than {MAX_NESTING} levels deep; refused") from None
    except yaml.YAMLError as e:
        raise UserError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    check_nesting(data, where)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: a recipe must be a mapping of settings")
    return data


def read_recipe(name_or_file: str) -> dict:
    """A recipe's own settings (not merged): a shipped name (`resnet_cifar`) or a YAML file."""
    if os.path.isfile(name_or_file):
        with open(name_or_file) as f:
            return _read_yaml(f.read(), name_or_file)
    if name_or_file not in recipe_names():
        raise UserError(
            f"unknown recipe {name_or_file!r}; shipped: {', '.join(recipe_names())} (or a YAML file)"
        )
    text = resources.files(__package__).joinpath(f"{name_or_file}.yaml").read_text()
    return _read_yaml(text, f"recipe {name_or_file}")


def merge(
    base: dict, override: dict, where: str, prefix: str = "", optional: frozenset[str] = frozenset()
) -> dict:
    """`base` updated with `override`; keys unknown to `base` are a UserError naming `where`.
    A group of settings takes a group, or null where its dotted name is in `optional` (a group
    that is off by default, e.g. `lookahead`: a recipe turns it on, `--set lookahead=null` off)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise UserError(f"{where}: unknown setting {dotted!r}")
        if isinstance(base[key], dict) and not (value is None and dotted in optional):
            if not isinstance(value, dict):
                raise UserError(f"{where}: {dotted!r} is a group of settings, not a value")
            out[key] = merge(base[key], value, where, f"{dotted}.", optional)
        else:
            out[key] = value
    return out


def parse_set(items: list[str]) -> dict:
    """`["optim.lr=0.05", "schedule.milestones=[2, 4]"]` -> nested dict, values via yaml.safe_load."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got {item!r}")
        check_flow_nesting(raw, f"--set {key}")
        try:
            value = yaml.safe_load(raw)
        except RecursionError:
            raise UserError(f"--set {key}: nested more than {MAX_NESTING} levels deep; refused") from None
        except yaml.YAMLError:
            raise UserError(f"--set {key}: cannot parse value {raw[:80]!r}") from None
        check_nesting(value, f"--set {key}")
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: conflicts with another --set")
        node[leaf] = value
    return out


def without_none(d: dict) -> dict:
    """Flags the user did not give are None: drop them (recursively) so they do not override."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = without_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def base_settings() -> dict:
    """base.yaml: every setting a run has, at its default."""
    return _read_yaml(resources.files(__package__).joinpath("base.yaml").read_text(), "base.yaml")


def with_later_settings(saved: dict) -> dict:
    """A run's saved config with the settings added to base.yaml after it was written, at their
    defaults: a new setting's default keeps what the code did before the setting existed."""

    def fill(node: dict, base: dict) -> dict:
        out = dict(node)
        for key, value in base.items():
            if key not in out:
                out[key] = copy.deepcopy(value)
            elif isinstance(value, dict) and isinstance(out[key], dict):
                out[key] = fill(out[key], value)
        return out

    return fill(saved, base_settings())


def resolve(
    model_name: str,
    recipe: str | None = None,
    flags: dict | None = None,
    sets: list[str] | None = None,
    data_spec: str = "synthetic",
) -> RunConfig:
    """The settings of a run, checked: base <- recipe <- flags (None values skipped) <- --set.
    `data_spec`: the run's --data (the built-in synthetic set when a recipe is only looked at)."""
    recipe = recipe or default_recipe(model_name)
    plain = merge(base_settings(), read_recipe(recipe), f"recipe {recipe}")
    plain = merge(plain, without_none(flags or {}), "command line")
    plain = merge(plain, parse_set(sets or []), "--set", optional=frozenset(OPTIONAL_GROUPS))
    return RunConfig.from_dict({"model": model_name, "data_spec": data_spec, **plain, "recipe": recipe})
