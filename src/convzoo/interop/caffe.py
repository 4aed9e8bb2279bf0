"""Caffe's published weights (`.caffemodel`) -> convzoo, without a Caffe installation.

The files (read by `caffe_format`, which parses caffe.proto's wire format with `protobuf`):

| convzoo model        | Caffe release                                              | format |
|----------------------|------------------------------------------------------------|--------|
| `alexnet_original`   | BVLC AlexNet, bvlc_alexnet.caffemodel                      | layer  |
| `caffenet`           | BVLC reference CaffeNet; Places365 alexnet_places365       | layer  |
| `googlenet_original` | BVLC GoogLeNet, bvlc_googlenet.caffemodel (+ loss1/loss2)  | layer  |
| `vgg_d`, `vgg_e`     | VGG_ILSVRC_16_layers / _19_layers.caffemodel (VGG team)    | V1     |
| `nin`                | NIN-Imagenet, nin_imagenet.caffemodel (Caffe model zoo)    | V1     |
| `resnet50_paper` ... | ResNet-50/101/152-model.caffemodel (Kaiming He)            | layer  |

The key map is pure: every Caffe layer that holds blobs is named by the map (else a
UserError names it), every blob lands in exactly one convzoo tensor, and every blob's shape
is asserted against the convzoo model (built on the meta device) before it is materialised.
Caffe's legacy 4-D shapes (V1 files store an fc weight as 1x1xOUTxIN, a bias as 1x1x1xOUT)
are compared with their leading 1s removed.

ResNet: Caffe splits a normalisation into BatchNorm (blobs: mean, variance, and a moving-
average scale factor s that both are divided by; s = 0 means "use zeros", as in Caffe) and
Scale (gamma, beta). They become one BatchNorm2d: running_mean = mean / s, running_var =
var / s + (eps_caffe - eps_torch), weight = gamma, bias = beta. A convolution bias in front of
a BatchNorm (the released ResNet-50's conv1 has one) is folded into the running mean
(BN(Wx + b) with mean m equals BN(Wx) with mean m - b), so the models keep the paper's
bias-free convolutions and still compute what Caffe computes.

Geometry: Caffe rounds pooling output sizes up. The models are built with
`caffe_pooling=True` where their pooling differs (`WeightSpec.model_kwargs`), see each model's
docstring. Preprocessing is that of Caffe's python classifier (python/caffe/classifier.py):
squash the image to 256x256 (aspect ignored), centre crop to the input size, BGR channel
order, pixel values 0-255, minus a mean pixel (default the ILSVRC mean 104, 117, 123 (B, G, R);
`mean=` takes another one or a `.binaryproto` mean image, reduced to its per-channel mean as the
classifier does), no division (std 1).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable
from typing import Protocol, cast

import torch

from ..data.labels import load_labels
from ..errors import UserError
from ..models import googlenet, resnet
from ..registry import build, model_info
from ..weights import WeightSpec
from . import labels_for
from .caffe_format import Blob, Layer, Net, as_array, read_caffemodel, read_mean_file

OPTIONS = ("mean",)
ILSVRC_MEAN_BGR = (104.0, 117.0, 123.0)  # BVLC's ILSVRC-2012 mean pixel, B, G, R
SQUASH_SIZE = 256  # the classifier's image_dims: 256x256
TORCH_BN_EPS = 1e-5  # nn.BatchNorm2d's default, used by the ResNets
CAFFE_BN_EPS = 1e-5  # caffe.proto BatchNormParameter.eps default

# the layer holding the class scores, read for the class count (365 for Places365's files)
CLASSIFIER = {
    "alexnet_original": "fc8",
    "caffenet": "fc8",
    "vgg_d": "fc8",
    "vgg_e": "fc8",
    "googlenet_original": "loss3/classifier",
    "nin": "cccp8-1024",
    "resnet50_paper": "fc1000",
    "resnet101_paper": "fc1000",
    "resnet152_paper": "fc1000",
}
MODELS = tuple(CLASSIFIER)
CAFFE_POOLING = (
    "alexnet_original",
    "caffenet",
    "googlenet_original",
    "vgg_d",
    "vgg_e",
    "resnet50_paper",
    "resnet101_paper",
    "resnet152_paper",
)  # nin pools in ceil mode anyway

# GoogLeNet: Caffe's inception sub-layer -> convzoo's branch
INCEPTION_BRANCHES = (
    ("1x1", "branch1"),
    ("3x3_reduce", "branch2.0"),
    ("3x3", "branch2.1"),
    ("5x5_reduce", "branch3.0"),
    ("5x5", "branch3.1"),
    ("pool_proj", "branch4.1"),
)
AUX_LAYERS = (("conv", "conv.conv"), ("fc", "fc1"), ("classifier", "fc2"))  # loss1/*, loss2/*
# NIN-Imagenet: the mlpconv blocks' Caffe layers (conv, cccp, cccp)
NIN_LAYERS = (
    ("conv1", "cccp1", "cccp2"),
    ("conv2", "cccp3", "cccp4"),
    ("conv3", "cccp5", "cccp6"),
    ("conv4-1024", "cccp7-1024", "cccp8-1024"),
)
# ResNet bottleneck: Caffe branch suffix -> (conv, bn) of convzoo's Bottleneck
RESNET_BRANCHES = (("2a", "conv1", "bn1"), ("2b", "conv2", "bn2"), ("2c", "conv3", "bn3"))


def check_model(name: str) -> None:
    if name not in MODELS:
        raise UserError(
            f"no published Caffe weights map onto {name!r}; --from caffe takes {', '.join(MODELS)}"
        )


def load_source(path: str, name: str) -> Net:
    """The parsed file, refused before reading when it is far larger than `name`'s weights
    (float32, twice over for slack: blob-less layer definitions, a stored diff) plus 64 MB."""
    params = sum(math.prod(s) for s in _target(name, model_info(name).num_classes, ()).values())
    return read_caffemodel(path, max_bytes=2 * 4 * params + (64 << 20))


class _PaperStaged(Protocol):  # a ZooModel (interop does not import the layers module)
    def paper_stages(self) -> dict[str, str]: ...


# ---- the rules: Caffe layer(s) -> convzoo module(s) -----------------------------------------
# ("param", caffe layer, convzoo module): blobs [weight, bias?] -> module.weight, module.bias
# ("bn", conv, batchnorm, scale, convzoo conv, convzoo bn): conv + BatchNorm + Scale -> conv, bn
def _stage_rules(name: str, target: dict) -> list[tuple]:
    """AlexNet, CaffeNet, VGG: their paper rows carry Caffe's layer names (conv1_1, fc6, ...)."""
    with torch.device("meta"):
        stages = cast(_PaperStaged, build(name)).paper_stages()
    return [("param", row, path) for row, path in stages.items() if f"{path}.weight" in target]


def _googlenet_rules(name: str, target: dict) -> list[tuple]:
    rules = [
        ("param", "conv1/7x7_s2", "conv1.conv"),
        ("param", "conv2/3x3_reduce", "conv2_reduce.conv"),
        ("param", "conv2/3x3", "conv2.conv"),
    ]
    for row, *widths in googlenet.TABLE1:
        if widths:
            rules += [
                ("param", f"{row}/{suffix}", f"{row}.{path}.conv") for suffix, path in INCEPTION_BRANCHES
            ]
    rules.append(("param", "loss3/classifier", "fc"))
    for i in (1, 2):
        if f"aux{i}.fc2.weight" in target:
            rules += [("param", f"loss{i}/{suffix}", f"aux{i}.{path}") for suffix, path in AUX_LAYERS]
    return rules


def _nin_rules(name: str, target: dict) -> list[tuple]:
    return [
        ("param", layer, f"features.mlpconv{i}.{part}")
        for i, layers in enumerate(NIN_LAYERS, 1)
        for layer, part in zip(layers, ("conv", "cccp1", "cccp2"))
    ]


def resnet_unit_name(depth: int, stage: int, j: int) -> str:
    """Kaiming He's names: res2a, res2b, ...; ResNet-101/152 number the long stages 3 and 4
    as a, b1, b2, ... (res4b22 in ResNet-101, res4b35 in ResNet-152)."""
    if depth == 50 or stage in (2, 5):
        return f"{stage}{'abcdefghijklmnopqrstuvwxyz'[j]}"
    return f"{stage}a" if j == 0 else f"{stage}b{j}"


def _resnet_rules(name: str, target: dict) -> list[tuple]:
    depth = int(name.removeprefix("resnet").split("_")[0])
    rules: list[tuple[str, ...]] = [("bn", "conv1", "bn_conv1", "scale_conv1", "conv1", "bn1")]
    for stage, repeats in enumerate(resnet.TABLE1[depth][1], 2):
        for j in range(repeats):
            unit, path = resnet_unit_name(depth, stage, j), f"layer{stage - 1}.{j}"
            branches = [(b, f"{path}.{c}", f"{path}.{n}") for b, c, n in RESNET_BRANCHES]
            if j == 0:  # the projection shortcut of a stage's first unit
                branches.append(("1", f"{path}.downsample.0", f"{path}.downsample.1"))
            rules += [
                ("bn", f"res{unit}_branch{b}", f"bn{unit}_branch{b}", f"scale{unit}_branch{b}", c, n)
                for b, c, n in branches
            ]
    rules.append(("param", "fc1000", "fc"))
    return rules


RULES = {
    "alexnet_original": _stage_rules,
    "caffenet": _stage_rules,
    "vgg_d": _stage_rules,
    "vgg_e": _stage_rules,
    "googlenet_original": _googlenet_rules,
    "nin": _nin_rules,
    "resnet50_paper": _resnet_rules,
    "resnet101_paper": _resnet_rules,
    "resnet152_paper": _resnet_rules,
}


# ---- blobs -> tensors -------------------------------------------------------------------------
def _squeeze(shape) -> tuple[int, ...]:
    shape = tuple(shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def _tensor(layer: Layer, i: int, key: str, shape: tuple[int, ...], model: str) -> torch.Tensor:
    """Blob i of `layer` as a float32 tensor of `shape`, after asserting its shape fits."""
    blob: Blob = layer.blobs[i]
    if _squeeze(blob.shape) != _squeeze(shape) or blob.count != math.prod(shape):
        raise UserError(
            f"Caffe layer {layer.name!r} blob {i} has shape {list(blob.shape)}, but {model}'s "
            f"{key} is {list(shape)}; the file does not fit {model}"
        )
    return torch.from_numpy(as_array(blob, shape))


def _blob_count(layer: Layer, allowed: tuple[int, ...], model: str) -> None:
    if len(layer.blobs) not in allowed:
        raise UserError(
            f"Caffe layer {layer.name!r} ({layer.type}) has {len(layer.blobs)} blobs; "
            f"{model} expects {' or '.join(map(str, allowed))}"
        )


def _param(layers, target, model, caffe: str, module: str):
    layer = layers(caffe)
    keys = [k for k in (f"{module}.weight", f"{module}.bias") if k in target]
    _blob_count(layer, (len(keys),), model)
    return [(f"{caffe}[{i}]", k, _tensor(layer, i, k, target[k], model)) for i, k in enumerate(keys)]


def _conv_bn(layers, target, model, conv: str, bn: str, scale: str, conv_key: str, bn_key: str):
    """Conv (+ bias) -> BatchNorm (mean, var, factor) -> Scale (gamma, beta) -> conv + one BN."""
    c, b, s = layers(conv), layers(bn), layers(scale)
    _blob_count(c, (1, 2), model)
    _blob_count(b, (3,), model)
    _blob_count(s, (2,), model)
    w, ch = f"{conv_key}.weight", (target[f"{bn_key}.running_mean"][0],)
    factor = float(_tensor(b, 2, f"{bn_key} (Caffe's moving-average factor)", (1,), model)[0])
    inv = 0.0 if factor == 0 else 1.0 / factor  # Caffe: a zero factor gives zero statistics
    mean = _tensor(b, 0, f"{bn_key}.running_mean", ch, model).double() * inv
    var = _tensor(b, 1, f"{bn_key}.running_var", ch, model).double() * inv
    if len(c.blobs) == 2:  # a conv bias: folded into the mean (docstring)
        mean = mean - _tensor(c, 1, f"{bn_key}.running_mean (folded conv bias)", ch, model).double()
    eps = b.bn_eps if b.bn_eps is not None else CAFFE_BN_EPS
    var = var + (eps - TORCH_BN_EPS)
    out = [
        (f"{conv}[0]", w, _tensor(c, 0, w, target[w], model)),
        (f"{scale}[0]", f"{bn_key}.weight", _tensor(s, 0, f"{bn_key}.weight", ch, model)),
        (f"{scale}[1]", f"{bn_key}.bias", _tensor(s, 1, f"{bn_key}.bias", ch, model)),
        (
            f"{bn}[0]/[2]" + ("-" + f"{conv}[1]" if len(c.blobs) == 2 else ""),
            f"{bn_key}.running_mean",
            mean.float(),
        ),
        (f"{bn}[1]/[2]", f"{bn_key}.running_var", var.float()),
    ]
    return out


APPLY: dict[str, Callable[..., Iterable[tuple[str, str, torch.Tensor]]]] = {"param": _param, "bn": _conv_bn}


@functools.lru_cache(maxsize=16)
def _target(name: str, num_classes: int, kwargs: tuple) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = build(name, num_classes=num_classes, **dict(kwargs))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _layer_lookup(net: Net, used: set[str], model: str):
    by_name = {layer.name: layer for layer in net.layers if layer.blobs}

    def get(name: str) -> Layer:
        if name not in by_name:
            some = ", ".join(list(by_name)[:4])
            raise UserError(
                f"the Caffe file has no layer {name!r} with weights, which {model} needs "
                f"(it has {len(by_name)}: {some}, ...); not a {model} release?"
            )
        used.add(name)
        return by_name[name]

    return get, by_name


def _num_classes(net: Net, name: str) -> int:
    layer = next((x for x in net.layers if x.name == CLASSIFIER[name] and x.blobs), None)
    if layer is None:
        raise UserError(f"the Caffe file has no classifier layer {CLASSIFIER[name]!r}; not a {name} release?")
    return _squeeze(layer.blobs[0].shape)[0]


def build_kwargs(name: str, has_aux: bool) -> dict:
    kw = {"caffe_pooling": True} if name in CAFFE_POOLING else {}
    if name == "alexnet_original":  # bvlc_alexnet's LRN: k = 1, alpha 1e-4 / 5 (paper: 2, 1e-4)
        kw["caffe_lrn"] = True
    if name == "googlenet_original":
        kw["aux_logits"] = has_aux
    return kw


def convert_state(net: Net, name: str):
    """Apply the model's rules; every layer with blobs is used, every convzoo key is filled."""
    has_aux = any(x.name.startswith(("loss1/", "loss2/")) and x.blobs for x in net.layers)
    num_classes = _num_classes(net, name)
    target = _target(name, num_classes, tuple(sorted(build_kwargs(name, has_aux).items())))
    used: set[str] = set()
    layers, by_name = _layer_lookup(net, used, name)
    out, mapping = {}, []
    for kind, *args in RULES[name](name, target):
        for src, key, tensor in APPLY[kind](layers, target, name, *args):
            out[key] = tensor
            mapping.append((src, key, tuple(tensor.shape)))
    unused = [n for n in by_name if n not in used]
    if unused:
        raise UserError(
            f"Caffe layer(s) {unused[:3]} ({by_name[unused[0]].type}) hold weights that "
            f"{name} has no place for ({len(unused)} such layers); not a {name} release?"
        )
    missing = [k for k in target if k not in out and not k.endswith("num_batches_tracked")]
    assert not missing, f"the {name} key map misses {missing[:3]}"  # a bug in RULES, not in the file
    state = {k: out[k] if k in out else torch.zeros((), dtype=torch.long) for k in target}
    return state, mapping


def model_kwargs(name: str, state: dict) -> dict:
    return build_kwargs(name, any(k.startswith("aux1.") for k in state))


# ---- preprocessing -------------------------------------------------------------------------------
def resolve_mean(mean, log=lambda s: None) -> tuple[tuple[float, float, float], str]:
    """`mean` as (B, G, R) and where it came from: None (the ILSVRC mean pixel), "B,G,R",
    three numbers, or a `.binaryproto` mean file (reduced to its per-channel mean)."""
    if mean is None:
        log(f"note: mean pixel {ILSVRC_MEAN_BGR} (B, G, R), BVLC's ILSVRC-2012 mean; pass --mean for another")
        return ILSVRC_MEAN_BGR, "ILSVRC-2012 mean pixel (default)"
    if isinstance(mean, str) and (os.path.isfile(mean) or mean.endswith(".binaryproto")):
        values = read_mean_file(mean)
        log(f"note: mean pixel {tuple(round(v, 3) for v in values)} (B, G, R) from {os.path.basename(mean)}")
        return values, f"{os.path.basename(mean)} (per-channel mean of the mean image)"
    parts = mean.split(",") if isinstance(mean, str) else list(mean)
    try:
        numbers = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
        raise UserError(f"--mean takes three numbers B,G,R (0-255) or a .binaryproto file, got {mean!r}")
    return (numbers[0], numbers[1], numbers[2]), "given"


def weight_spec(name: str, num_classes: int, src_file: str, log, mean=None) -> WeightSpec:
    bgr, origin = resolve_mean(mean, log)
    size = model_info(name).input_size  # 227 for AlexNet/CaffeNet, 224 for the others
    labels, extra = labels_for(num_classes), {}
    if num_classes == 365:  # the Places365 Caffe releases
        labels, extra["dataset"] = load_labels("places365"), "places365"
    extra.update(
        framework="caffe",
        mean_source=origin,
        preprocessing="Caffe classifier: squash to 256x256, centre crop, BGR, 0-255, minus the mean",
    )
    return WeightSpec(
        model=name,
        num_classes=num_classes,
        labels=labels,
        mean=bgr,
        std=(1.0, 1.0, 1.0),
        input_size=size,
        crop_size=size,
        resize_size=SQUASH_SIZE,
        interpolation="bilinear",
        channel_order="BGR",
        pixel_scale=255.0,
        resize_mode="squash",
        extra=extra,
    )
