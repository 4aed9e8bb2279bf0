"""A checkpoint of the same architecture from any other implementation -> convzoo, by order.

Two PyTorch implementations of one network register their parameters in the order the
layers are built, which is the order of the paper's table, whatever they name them. So the
i-th tensor of the source becomes the i-th tensor of the convzoo model, provided every shape
agrees; the first disagreement refuses the whole conversion, naming both keys.

BatchNorm's `num_batches_tracked` counter is left out on both sides (older checkpoints and
other frameworks' ports lack it; it only matters for momentum=None): a source counter is
dropped, a convzoo counter is zero. Preprocessing is unknown for a foreign checkpoint: the
WeightSpec records ImageNet mean/std at the model's paper input size, and says so.

A `.safetensors` source has lost that order (safetensors stores tensors sorted by name), so
`recover_order` rebuilds it from the names where they allow it: every source tensor whose
name and shape are a convzoo tensor's takes that place; the remaining ones are grouped by
module (`linear.weight`, `linear.bias` -> `linear`) and a module takes the place of the one
remaining convzoo module whose tensor names and shapes it has, when exactly one has them
(e.g. a classifier called `linear` instead of `fc`). Anything ambiguous is refused in one
line: convert the original `.pth`, whose order is kept.
"""

from __future__ import annotations

from ..errors import UserError
from ..registry import model_info
from ..weights import WeightSpec
from . import BN_COUNTER, Mapping, as_float32, class_dims, labels_for, target_shapes


def check_model(name: str) -> None:
    pass  # any registered model


def _pair(src_keys: list[str], target_keys: list[str], name: str) -> None:
    if len(src_keys) != len(target_keys):
        raise UserError(
            f"remap refused: the checkpoint has {len(src_keys)} tensors (without "
            f"{BN_COUNTER}), {name} has {len(target_keys)}; not the same architecture"
        )


def convert_state(src: dict, name: str):
    """The i-th source tensor -> the i-th convzoo tensor, shapes asserted."""
    src_keys = [k for k in src if not k.endswith(BN_COUNTER)]
    default = target_shapes(name)
    _pair(src_keys, [k for k in default if not k.endswith(BN_COUNTER)], name)
    # the class count: read off the source tensors that sit where the classifier sits
    position = {k: i for i, k in enumerate(k for k in default if not k.endswith(BN_COUNTER))}
    counts = {
        src[src_keys[position[k]]].shape[d]
        for k, d in class_dims(name).items()
        if src[src_keys[position[k]]].dim() > d
    }
    num_classes = counts.pop() if len(counts) == 1 else model_info(name).num_classes
    target = target_shapes(name, num_classes)
    target_keys = [k for k in target if not k.endswith(BN_COUNTER)]
    out = {}
    mapping: Mapping = []
    for i, (s, t) in enumerate(zip(src_keys, target_keys)):
        shape = tuple(src[s].shape)
        if shape != target[t]:
            raise UserError(
                f"remap refused: tensor #{i} {s} has shape {list(shape)} but {name}'s "
                f"{t} has {list(target[t])}; the architectures disagree"
            )
        out[t] = as_float32(src[s])
        mapping.append((s, t, shape))
    mapping += [(k, None, tuple(src[k].shape)) for k in src if k.endswith(BN_COUNTER)]
    import torch

    state = {k: out[k] if k in out else torch.zeros((), dtype=torch.long) for k in target}
    return state, mapping


def recover_order(src: dict, name: str, src_file: str) -> dict:
    """`src` in convzoo's module order, recovered from names and shapes (see the docstring)."""
    src_keys = [k for k in src if not k.endswith(BN_COUNTER)]
    target = {k: v for k, v in target_shapes(name).items() if not k.endswith(BN_COUNTER)}
    _pair(src_keys, list(target), name)
    classy = class_dims(name)

    def fits(t: str, shape: tuple) -> bool:  # the class count may differ from the default
        want = target[t]
        return len(shape) == len(want) and all(
            a == b or classy.get(t) == d for d, (a, b) in enumerate(zip(shape, want))
        )

    place = {t: t for t in target if t in src and fits(t, tuple(src[t].shape))}
    left = _modules([k for k in src_keys if k not in place.values()])
    for module, leaves in _modules([t for t in target if t not in place]).items():
        matches = [
            m
            for m, ls in left.items()
            if sorted(ls) == sorted(leaves)
            and all(fits(f"{module}.{leaf}", tuple(src[f"{m}.{leaf}"].shape)) for leaf in leaves)
        ]
        if len(matches) != 1:
            raise UserError(
                f"remap cannot recover the module order of {src_file}: safetensors stores "
                f"tensors sorted by name, and {name}'s {module} matches {len(matches)} of its "
                f"unnamed modules by shape; convert the original .pth (it keeps the order)"
            )
        for leaf in left.pop(matches[0]):
            place[f"{module}.{leaf}"] = f"{matches[0]}.{leaf}"
    ordered = {place[t]: src[place[t]] for t in target}
    return {**ordered, **{k: v for k, v in src.items() if k.endswith(BN_COUNTER)}}


def _modules(keys: list[str]) -> dict[str, list[str]]:
    """`a.b.weight` -> {"a.b": ["weight", ...]}, in key order."""
    out: dict[str, list[str]] = {}
    for k in keys:
        module, _, leaf = k.rpartition(".")
        out.setdefault(module, []).append(leaf)
    return out


def weight_spec(name: str, num_classes: int, src_file: str, log) -> WeightSpec:
    size = model_info(name).input_size
    log(
        f"note: remap cannot know how {src_file} was trained to be fed; recorded ImageNet "
        f"mean/std at {size}x{size} - check them"
    )
    return WeightSpec(
        model=name,
        num_classes=num_classes,
        labels=labels_for(num_classes),
        input_size=size,
        extra={"preprocessing": "assumed (ImageNet defaults)"},
    )
