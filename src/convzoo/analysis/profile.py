"""Per-layer profile of any nn.Module: output shape, parameters, MACs, receptive field.

Counting follows docs/DESIGN.md "Counting": `params` are the parameters of the layers that run at
inference (auxiliary heads, which run only in training, are reported as `aux_params`);
`macs` are conv and linear multiply-accumulates for one image.

Receptive fields are tracked through every tensor operation, not only through modules,
so branches (Inception) and shortcuts (ResNet) are handled: a `TorchFunctionMode` keeps,
for every tensor, its receptive-field size r and cumulative stride j (the "jump").
A conv or pool with kernel k, dilation d and stride s gives r' = r + (k-1)*d*j and j' = j*s,
per axis (a 1x7 then a 7x1 conv see 7x7, not 13x13; the reported r is the larger axis);
an op joining several tensors (cat, add) takes the largest r on each axis; a global pool or a linear
layer sees the whole image ("global"). Runs on the meta device by default, so profiling a
138M-parameter VGG takes well under a second.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import cast

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ..layers import ZooModel

GLOBAL = None  # receptive_field value for layers that see the whole image


@dataclass
class LayerRow:
    name: str
    type: str
    depth: int  # 0: paper-level block, 1: layer
    output_shape: list[int]  # without the batch dimension
    params: int
    macs: int
    receptive_field: int | None  # theoretical size in input pixels; None = global
    rf_stride: int  # cumulative stride ("jump") in input pixels
    kernel: str = ""  # e.g. "11x11/4 p0 g2"
    cxk: int = 0  # C_in/groups x C_out: per-position complexity of a conv
    note: str = ""  # grouped-conv and low-rank (n x 1 / 1 x n) savings, see conv_note


@dataclass
class Profile:
    model: str
    input_size: int
    params: int
    macs: int
    aux_params: int
    layers: list[LayerRow]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def row(self, name: str) -> LayerRow:
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(name)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _arg(args, kwargs, index, name, default):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


class _RFMode(TorchFunctionMode):
    """Records (receptive field, jump) for every tensor produced inside the mode."""

    def __init__(self, image_size: int):
        super().__init__()
        self.info: dict[int, tuple[tuple[float, float], int]] = {}  # id -> ((r_h, r_w), jump)
        self.keep: list[torch.Tensor] = []  # keep tensors alive so their ids stay unique
        self.image_size = image_size
        self.geometry_warnings: list[str] = []

    def set(self, t: torch.Tensor, rf, jump: int) -> None:
        self.info[id(t)] = (rf if isinstance(rf, tuple) else (rf, rf), jump)
        self.keep.append(t)

    def axes(self, t) -> tuple[tuple[float, float], int] | None:
        return self.info.get(id(t)) if isinstance(t, torch.Tensor) else None

    def get(self, t) -> tuple[float, int] | None:
        v = self.axes(t)
        return None if v is None else (max(v[0]), v[1])

    def _window(self, kind, x, k, s, p, d, out, ceil_mode=False):
        rf, jump = self.axes(x) or ((1, 1), 1)
        k, s, p, d = _pair(k), _pair(s if s not in (None, []) else k), p, _pair(d)
        if isinstance(p, str):  # 'same' / 'valid'
            p = (0, 0) if p == "valid" else tuple((di * (ki - 1)) // 2 for ki, di in zip(k, d))
        p = _pair(p)
        # W' = (W - F + 2P)/S + 1 should be whole. When it is not, the last window does not
        # fit: harmless while the leftover lies in the padding, but real input pixels are
        # silently dropped once it is larger than the padding (ceil_mode keeps them).
        # A strided 1x1 (ResNet's projection shortcut) subsamples by design: not flagged.
        for axis, w in enumerate(x.shape[-2:]):
            span = w + 2 * p[axis] - d[axis] * (k[axis] - 1) - 1
            if k[axis] > 1 and not ceil_mode and span % s[axis] > p[axis]:
                self.geometry_warnings.append(
                    f"{kind} {k[0]}x{k[1]}/{s[0]}: (W - F + 2P)/S + 1 = ({w} - {d[axis] * (k[axis] - 1) + 1}"
                    f" + {2 * p[axis]})/{s[axis]} + 1 = {span / s[axis] + 1:.2f} is not whole"
                )
                break
        self.set(out, tuple(rf[a] + d[a] * (k[a] - 1) * jump for a in range(2)), jump * max(s))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if not isinstance(out, torch.Tensor):
            if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
                outs = [o for o in out if isinstance(o, torch.Tensor)]
            else:
                return out
        else:
            outs = [out]
        x = args[0] if args else kwargs.get("input")
        if name in ("conv2d", "conv1d"):
            w = _arg(args, kwargs, 1, "weight", None)
            self._window(
                "conv",
                x,
                tuple(w.shape[-2:]),
                _arg(args, kwargs, 3, "stride", 1),
                _arg(args, kwargs, 4, "padding", 0),
                _arg(args, kwargs, 5, "dilation", 1),
                outs[0],
            )
        elif name in ("max_pool2d", "max_pool2d_with_indices"):
            self._window(
                "max-pool",
                x,
                _arg(args, kwargs, 1, "kernel_size", 1),
                _arg(args, kwargs, 2, "stride", None),
                _arg(args, kwargs, 3, "padding", 0),
                _arg(args, kwargs, 4, "dilation", 1),
                outs[0],
                _arg(args, kwargs, 5, "ceil_mode", False),
            )
        elif name == "avg_pool2d":
            self._window(
                "avg-pool",
                x,
                _arg(args, kwargs, 1, "kernel_size", 1),
                _arg(args, kwargs, 2, "stride", None),
                _arg(args, kwargs, 3, "padding", 0),
                1,
                outs[0],
                _arg(args, kwargs, 4, "ceil_mode", False),
            )
        elif name.startswith("adaptive_") or name == "linear":
            jump = (self.get(x) or (1, 1))[1]
            for o in outs:
                self.set(o, math.inf, jump)
        else:
            sources = [self.axes(t) for t in tree_flatten((args, kwargs))[0]]
            sources = [s for s in sources if s is not None]
            if sources:
                rf = tuple(max(s[0][a] for s in sources) for a in range(2))
                jump = max(s[1] for s in sources)
                for o in outs:
                    self.set(o, rf, jump)
        return out


def _kernel_desc(m: nn.Module) -> str:
    conv = getattr(m, "conv", None)
    if isinstance(conv, nn.Conv2d):  # a conv(+BN)(+ReLU) unit: describe its conv
        m = conv
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        p = m.padding if isinstance(m.padding, str) else "x".join(map(str, sorted(set(m.padding))))
        g = f" g{m.groups}" if m.groups > 1 else ""
        return f"{kh}x{kw}/{m.stride[0]} p{p}{g}"
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s, pad = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
        return f"{k[0]}x{k[1]}/{s[0]} p{pad[0]}" + (" ceil" if m.ceil_mode else "")
    return ""


def _is_leaf(m: nn.Module) -> bool:
    return next(iter(m.children()), None) is None


def profile(
    model: nn.Module,
    input_size: int | tuple[int, int] = 224,
    *,
    name: str | None = None,
    device: str | torch.device | None = "meta",
    bottleneck_ratio: float = 4.0,
) -> Profile:
    """Profile `model` on one image of `input_size`; the model is put in eval mode.

    With `device="meta"` (default) the model is moved to the meta device if its parameters
    are elsewhere, so nothing is computed and nothing large is allocated.
    """
    h, w = _pair(input_size)
    if device is not None and next(model.parameters()).device != torch.device(device):
        model = model.to(device)
    dev = next(model.parameters()).device
    model.eval()
    mode = _RFMode(max(h, w))
    leaf_rows: dict[str, LayerRow] = {}
    order: list[tuple[str, int]] = []  # (name, depth) in call order
    called: set[int] = set()
    stages = (
        cast(ZooModel, model).paper_stages()
        if hasattr(model, "paper_stages")
        else {n: n for n, _ in model.named_children()}
    )
    path_to_stage = {p: s for s, p in stages.items()}
    stage_rows: dict[str, LayerRow] = {}
    handles = []

    def rf_of(t):
        rf, jump = mode.get(t) or (1, 1)
        return (None if math.isinf(rf) else int(rf)), int(jump)

    def leaf_hook(mod_name):
        def hook(m, inputs, out):
            out_t = out[0] if isinstance(out, (tuple, list)) else out
            macs = 0
            cxk = 0
            if isinstance(m, nn.Conv2d):
                kh, kw = m.kernel_size
                cxk = (m.in_channels // m.groups) * m.out_channels
                macs = out_t[0].numel() * (m.in_channels // m.groups) * kh * kw
            elif isinstance(m, nn.Linear):
                macs = (out_t[0].numel() // m.out_features) * m.in_features * m.out_features
            params = 0
            if id(m) not in called:
                called.add(id(m))
                params = sum(p.numel() for p in m.parameters(recurse=False))
            rf, jump = rf_of(out_t)
            if mod_name in leaf_rows:  # a module called twice: accumulate its cost
                row = leaf_rows[mod_name]
                row.macs += macs
                row.output_shape, row.receptive_field, row.rf_stride = list(out_t.shape[1:]), rf, jump
                return
            leaf_rows[mod_name] = LayerRow(
                mod_name,
                type(m).__name__,
                1,
                list(out_t.shape[1:]),
                params,
                macs,
                rf,
                jump,
                _kernel_desc(m),
                cxk,
                conv_note(m),
            )
            order.append((mod_name, 1))

        return hook

    def stage_pre_hook(stage):
        def hook(m, inputs):
            order.append((stage, 0))

        return hook

    def stage_hook(stage):
        def hook(m, inputs, out):
            out_t = out[0] if isinstance(out, (tuple, list)) else out
            rf, jump = rf_of(out_t)
            stage_rows[stage] = LayerRow(
                stage, type(m).__name__, 0, list(out_t.shape[1:]), 0, 0, rf, jump, _kernel_desc(m)
            )

        return hook

    for mod_name, m in model.named_modules():
        if mod_name in path_to_stage:
            stage = path_to_stage[mod_name]
            handles.append(m.register_forward_pre_hook(stage_pre_hook(stage)))
            handles.append(m.register_forward_hook(stage_hook(stage)))
        if _is_leaf(m) and mod_name:
            handles.append(m.register_forward_hook(leaf_hook(mod_name)))
    x = torch.zeros(1, 3, h, w, device=dev)
    try:
        with torch.no_grad(), mode:
            mode.set(x, 1, 1)
            model(x)
    finally:
        for hd in handles:
            hd.remove()

    # block rows aggregate the layers below them
    rows: list[LayerRow] = []
    seen = set()
    for row_name, depth in order:
        if (row_name, depth) in seen:
            continue
        seen.add((row_name, depth))
        if depth == 0:
            srow = stage_rows[row_name]
            prefix = stages[row_name]
            for lr in leaf_rows.values():
                if lr.name == prefix or lr.name.startswith(prefix + "."):
                    srow.params += lr.params
                    srow.macs += lr.macs
            rows.append(srow)
        elif not (row_name in path_to_stage and _is_leaf(model.get_submodule(row_name))):
            rows.append(leaf_rows[row_name])  # a stage that is a bare layer appears once, as its block row
    total_params = sum(p.numel() for p in model.parameters())
    used_params = sum(r.params for r in leaf_rows.values())
    macs = sum(r.macs for r in leaf_rows.values())
    warnings = list(dict.fromkeys(mode.geometry_warnings))
    prev = None
    for r in (r for r in rows if r.depth == 0):
        if len(r.output_shape) != 3 or r.receptive_field is None:
            prev = None
            continue
        size = math.prod(r.output_shape)
        if prev is not None and prev[1] / size > bottleneck_ratio:
            warnings.append(
                f"representational bottleneck: {prev[0]} -> {r.name} shrinks HxWxC "
                f"{prev[1]:,} -> {size:,} (/{prev[1] / size:.1f})"
            )
        prev = (r.name, size)
    label = name or cast(str, getattr(model, "model_name", type(model).__name__))
    return Profile(label, h, used_params, macs, total_params - used_params, rows, warnings)


def conv_note(m: nn.Module) -> str:
    """What a grouped or asymmetric convolution saves against the dense / square one it replaces.

    Grouped (ResNeXt, AlexNet's two GPUs): per position C_in*C_out/G multiply-adds instead of
    C_in*C_out, i.e. 1/G. Asymmetric 1xn or nx1 (Inception-v3 Sec. 3.2): n instead of n*n, and a
    1xn followed by an nx1 costs 2n instead of n*n: a saving of 1 - 2/n (33% for n = 3).
    """
    if not isinstance(m, nn.Conv2d):
        return ""
    notes = []
    if m.groups > 1:
        notes.append(f"C*K/G = {m.in_channels}*{m.out_channels}/{m.groups}: 1/{m.groups} of dense")
    kh, kw = m.kernel_size
    if min(kh, kw) == 1 and max(kh, kw) > 1:
        n = max(kh, kw)
        notes.append(f"{kh}x{kw}: 1/{n} of a {n}x{n}; with its {kw}x{kh} partner saves {1 - 2 / n:.0%}")
    return "; ".join(notes)


def format_table(p: Profile, blocks_only: bool = False) -> str:
    """A fixed-width table, one row per block and layer, then totals and warnings."""
    head = (
        f"{'layer':<34} {'type':<18} {'kernel':<14} {'output':<16} {'params':>12} {'MACs':>15} "
        f"{'RF':>7} {'jump':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in p.layers:
        if blocks_only and r.depth:
            continue
        name = ("  " * r.depth + r.name)[:34]
        shape = "x".join(map(str, r.output_shape))
        rf = "global" if r.receptive_field is None else str(r.receptive_field)
        lines.append(
            f"{name:<34} {r.type[:18]:<18} {r.kernel:<14} {shape:<16} {r.params:>12,} {r.macs:>15,} "
            f"{rf:>7} {r.rf_stride:>5}" + (f"  {r.note}" if r.note else "")
        )
    lines.append("-" * len(head))
    lines.append(
        f"{p.model} at {p.input_size}x{p.input_size}: {p.params:,} params ({p.params / 1e6:.2f} M), "
        f"{p.macs:,} MACs ({p.macs / 1e9:.3f} G)"
        + (f", auxiliary heads {p.aux_params:,} params" if p.aux_params else "")
    )
    for wmsg in p.warnings:
        lines.append(f"warning: {wmsg}")
    return "\n".join(lines)
