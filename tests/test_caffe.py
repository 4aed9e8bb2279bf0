"""Caffe weights (interop/caffe.py) against OpenCV's Caffe importer, on real photos.

Each test writes a deploy `.prototxt` (the layer graph of the published release, transcribed
here) and a `.caffemodel` with RANDOM weights through the `protobuf` package from this file's own
subset of caffe.proto (true field types: packed floats, the V1 type enum) - an encoder separate
from the reader under test (which declares packed floats as bytes). OpenCV's
`cv2.dnn.readNetFromCaffe` reads the same two files with its own protobuf parser and its own
layers; both get the same preprocessed blob, and the logits must agree within 1e-4 relative.
The preprocessing is tested separately against Caffe's python classifier, written out here.

Sizes: the nets are full size (the key map asserts the published shapes), so the files are
large (VGG-16: 138M floats, 0.55 GB); AlexNet and CaffeNet share one file (same layers and
shapes, only the prototxt's order of pool and LRN differs).
"""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from convzoo import create_model
from convzoo.data.images import load_image
from convzoo.data.transforms import eval_transform_from_spec
from convzoo.errors import UserError
from convzoo.interop import convert
from convzoo.weights import WeightSpec, read_spec, save_weights
from helpers import one_line

FIXTURES = Path(__file__).parent / "fixtures"
PHOTOS = sorted(FIXTURES.glob("caffe_*.jpg"))  # two ILSVRC photos, shrunk to 320 px
RTOL = 1e-4
requires_cv2 = pytest.mark.skipif(
    importlib.util.find_spec("cv2") is None,
    reason="OpenCV (opencv-python-headless<5, the `test` extra) not installed",
)


# ---- the test's own subset of caffe.proto (BVLC/caffe src/caffe/proto/caffe.proto) ----------
V1_ENUM = {
    "Convolution": 4,
    "InnerProduct": 14,
    "LRN": 15,
    "Pooling": 17,
    "ReLU": 18,
    "Concat": 3,
    "Dropout": 6,
    "Softmax": 20,
}


def _schema() -> dict:
    from google.protobuf import descriptor_pb2 as d
    from google.protobuf import descriptor_pool, message_factory

    F = d.FieldDescriptorProto
    fd = d.FileDescriptorProto(name="test_caffe_subset.proto", package="caffe", syntax="proto2")

    def add(msg, name, num, typ, rep=False, ref="", packed=False):
        f = msg.field.add(
            name=name, number=num, type=typ, label=F.LABEL_REPEATED if rep else F.LABEL_OPTIONAL
        )
        if ref:
            f.type_name = f".caffe.{ref}"
        if packed:
            f.options.packed = True

    shape = fd.message_type.add(name="BlobShape")
    add(shape, "dim", 1, F.TYPE_INT64, rep=True, packed=True)
    blob = fd.message_type.add(name="BlobProto")
    add(blob, "shape", 7, F.TYPE_MESSAGE, ref="BlobShape")
    add(blob, "data", 5, F.TYPE_FLOAT, rep=True, packed=True)
    for i, n in enumerate(("num", "channels", "height", "width"), 1):
        add(blob, n, i, F.TYPE_INT64)
    bn = fd.message_type.add(name="BatchNormParameter")
    add(bn, "use_global_stats", 1, F.TYPE_BOOL)
    add(bn, "eps", 3, F.TYPE_FLOAT)
    layer = fd.message_type.add(name="LayerParameter")
    for n, i in (("name", 1), ("type", 2)):
        add(layer, n, i, F.TYPE_STRING)
    for n, i in (("bottom", 3), ("top", 4)):
        add(layer, n, i, F.TYPE_STRING, rep=True)
    add(layer, "blobs", 7, F.TYPE_MESSAGE, rep=True, ref="BlobProto")
    add(layer, "batch_norm_param", 139, F.TYPE_MESSAGE, ref="BatchNormParameter")
    v1 = fd.message_type.add(name="V1LayerParameter")
    enum = v1.enum_type.add(name="LayerType")
    enum.value.add(name="NONE", number=0)
    for n, i in V1_ENUM.items():
        enum.value.add(name=n.upper(), number=i)
    for n, i in (("bottom", 2), ("top", 3)):
        add(v1, n, i, F.TYPE_STRING, rep=True)
    add(v1, "name", 4, F.TYPE_STRING)
    add(v1, "type", 5, F.TYPE_ENUM, ref="V1LayerParameter.LayerType")
    add(v1, "blobs", 6, F.TYPE_MESSAGE, rep=True, ref="BlobProto")
    net = fd.message_type.add(name="NetParameter")
    add(net, "name", 1, F.TYPE_STRING)
    add(net, "layers", 2, F.TYPE_MESSAGE, rep=True, ref="V1LayerParameter")
    add(net, "layer", 100, F.TYPE_MESSAGE, rep=True, ref="LayerParameter")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {
        m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{m.name}"))
        for m in fd.message_type
    }


SCHEMA = _schema()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _fill_blob(blob, array: np.ndarray, v1: bool) -> None:
    if v1:  # V1-era files: the legacy 4-D shape (fc weight 1x1xOUTxIN, bias 1x1x1xOUT)
        dims = (1,) * (4 - array.ndim) + array.shape
        blob.num, blob.channels, blob.height, blob.width = dims
    else:
        blob.shape.dim.extend(array.shape)
    # Filling `data` element by element (extend) costs ~0.2 s per million floats, too slow for
    # 138M; so the values enter the float-typed field through protobuf's parser, as one packed
    # field 5 chunk, and the file is then written by protobuf's encoder (SerializeToString).
    # Small blobs go through extend, so both paths are exercised and must agree.
    flat = array.astype("<f4").ravel()
    if flat.size < 4096:
        blob.data.extend(flat.tolist())
    else:
        blob.MergeFromString(b"".join([b"\x2a", _varint(flat.nbytes), flat.data]))  # field 5, wire type 2
    assert len(blob.data) == flat.size


def _uniform(rng, std: float, shape) -> np.ndarray:
    """Random weights with standard deviation `std` (uniform: much cheaper than normal draws)."""
    return (rng.random(shape, dtype=np.float32) - np.float32(0.5)) * np.float32(std * math.sqrt(12))


# ---- a deploy net: prototxt text for OpenCV + random blobs for the caffemodel ------------------
class Net:
    def __init__(self, name: str, size: int, seed: int = 0):
        self.name, self.size = name, size
        self.rng = np.random.default_rng(seed)
        self.text = [
            f'name: "{name}"',
            'input: "data"',
            f"input_shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }}",
        ]
        self.layers = []  # (name, type, [arrays], bn eps or None)
        self.channels = {"data": 3}

    def _add(self, name, kind, bottoms, top, params="", blobs=(), eps=None):
        bottom = " ".join(f'bottom: "{b}"' for b in bottoms)
        self.text.append(f'layer {{ name: "{name}" type: "{kind}" {bottom} top: "{top}" {params} }}')
        self.layers.append((name, kind, list(blobs), eps))
        return top

    def conv(self, name, bottom, out, k, s=1, p=0, group=1, bias=True):
        cin = self.channels[bottom] // group
        w = _uniform(self.rng, math.sqrt(2 / (cin * k * k)), (out, cin, k, k))
        blobs = [w, self.rng.normal(0, 0.1, out)] if bias else [w]
        self.channels[name] = out
        params = (
            f"convolution_param {{ num_output: {out} kernel_size: {k} stride: {s} pad: {p} "
            f"group: {group} bias_term: {str(bias).lower()} }}"
        )
        return self._add(name, "Convolution", [bottom], name, params, blobs)

    def relu(self, name, x):
        return self._add(name, "ReLU", [x], x)

    def pool(self, name, x, k, s, p=0, kind="MAX"):
        self.channels[name] = self.channels[x]
        return self._add(
            name,
            "Pooling",
            [x],
            name,
            f"pooling_param {{ pool: {kind} kernel_size: {k} stride: {s} pad: {p} }}",
        )

    def lrn(self, name, x):  # BVLC's LRN: k left at Caffe's default 1
        self.channels[name] = self.channels[x]
        return self._add(name, "LRN", [x], name, "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }")

    def fc(self, name, x, n_in, out):
        blobs = [_uniform(self.rng, math.sqrt(1 / n_in), (out, n_in)), self.rng.normal(0, 0.1, out)]
        self.channels[name] = out
        return self._add(
            name, "InnerProduct", [x], name, f"inner_product_param {{ num_output: {out} }}", blobs
        )

    def concat(self, name, xs):
        self.channels[name] = sum(self.channels[x] for x in xs)
        return self._add(name, "Concat", xs, name)

    def bn_scale(self, conv_name, bn, scale, x, eps=None):
        c = self.channels[x]
        factor = self.rng.uniform(500, 1000)  # Caffe's moving-average factor: stats are stored times it
        mean, var = self.rng.normal(0, 0.2, c) * factor, self.rng.uniform(0.5, 1.5, c) * factor
        eps_text = f" eps: {eps}" if eps is not None else ""
        self._add(
            bn,
            "BatchNorm",
            [x],
            x,
            f"batch_norm_param {{ use_global_stats: true{eps_text} }}",
            [mean, var, np.array([factor])],
            eps,
        )
        return self._add(
            scale,
            "Scale",
            [x],
            x,
            "scale_param { bias_term: true }",
            [self.rng.uniform(0.3, 0.8, c), self.rng.normal(0, 0.1, c)],
        )

    def eltwise(self, name, a, b):
        self.channels[name] = self.channels[a]
        return self._add(name, "Eltwise", [a, b], name)

    def write_proto(self, folder: Path) -> Path:
        proto = folder / f"{self.name}.prototxt"
        proto.write_text("\n".join(self.text) + "\n")
        return proto

    def write(self, folder: Path, v1: bool = False) -> tuple[Path, Path]:
        proto, model = self.write_proto(folder), folder / f"{self.name}.caffemodel"
        msg = SCHEMA["NetParameter"](name=self.name)
        for name, kind, blobs, eps in self.layers:
            layer = msg.layers.add() if v1 else msg.layer.add()
            layer.name = name
            layer.type = V1_ENUM.get(kind, 0) if v1 else kind
            if eps is not None:
                layer.batch_norm_param.eps = eps
            for array in blobs:
                _fill_blob(layer.blobs.add(), np.asarray(array), v1)
        model.write_bytes(msg.SerializeToString())
        return proto, model


# ---- the published definitions, transcribed (deploy.prototxt of each release) -----------------
def alexnet_net(caffenet: bool) -> Net:
    """bvlc_alexnet / bvlc_reference_caffenet deploy: identical layers and blobs; CaffeNet pools
    before the LRN. Same seed, so both prototxts fit one caffemodel."""
    n = Net("caffenet" if caffenet else "alexnet", 227, seed=1)
    x = "data"
    for i, (out, k, s, p, g) in enumerate([(96, 11, 4, 0, 1), (256, 5, 1, 2, 2)], 1):
        x = n.relu(f"relu{i}", n.conv(f"conv{i}", x, out, k, s, p, g))
        if caffenet:
            x = n.lrn(f"norm{i}", n.pool(f"pool{i}", x, 3, 2))
        else:
            x = n.pool(f"pool{i}", n.lrn(f"norm{i}", x), 3, 2)
    for i, (out, g) in enumerate([(384, 1), (384, 2), (256, 2)], 3):
        x = n.relu(f"relu{i}", n.conv(f"conv{i}", x, out, 3, 1, 1, g))
    x = n.pool("pool5", x, 3, 2)
    x = n.relu("relu6", n.fc("fc6", x, 256 * 36, 4096))
    x = n.relu("relu7", n.fc("fc7", x, 4096, 4096))
    n.fc("fc8", x, 4096, 1000)
    return n


GOOGLENET = [
    ("inception_3a", 64, 96, 128, 16, 32, 32),
    ("inception_3b", 128, 128, 192, 32, 96, 64),
    "pool3",
    ("inception_4a", 192, 96, 208, 16, 48, 64),
    ("inception_4b", 160, 112, 224, 24, 64, 64),
    ("inception_4c", 128, 128, 256, 24, 64, 64),
    ("inception_4d", 112, 144, 288, 32, 64, 64),
    ("inception_4e", 256, 160, 320, 32, 128, 128),
    "pool4",
    ("inception_5a", 256, 160, 320, 32, 128, 128),
    ("inception_5b", 384, 192, 384, 48, 128, 128),
]


def googlenet_net(aux: bool) -> Net:
    """bvlc_googlenet (train_val's auxiliary heads loss1/loss2 when `aux`)."""
    n = Net("googlenet", 224, seed=2)
    x = n.relu("conv1/relu_7x7", n.conv("conv1/7x7_s2", "data", 64, 7, 2, 3))
    x = n.lrn("pool1/norm1", n.pool("pool1/3x3_s2", x, 3, 2))
    x = n.relu("conv2/relu_3x3_reduce", n.conv("conv2/3x3_reduce", x, 64, 1))
    x = n.relu("conv2/relu_3x3", n.conv("conv2/3x3", x, 192, 3, 1, 1))
    x = n.pool("pool2/3x3_s2", n.lrn("conv2/norm2", x), 3, 2)
    for row in GOOGLENET:
        if isinstance(row, str):
            x = n.pool(f"{row}/3x3_s2", x, 3, 2)
            continue
        r, c1, c3r, c3, c5r, c5, pp = row

        def cr(name, inp, out, k, p=0, r=r):
            return n.relu(f"{r}/relu_{name}", n.conv(f"{r}/{name}", inp, out, k, 1, p))

        b1 = cr("1x1", x, c1, 1)
        b2 = cr("3x3", cr("3x3_reduce", x, c3r, 1), c3, 3, 1)
        b3 = cr("5x5", cr("5x5_reduce", x, c5r, 1), c5, 5, 2)
        b4 = cr("pool_proj", n.pool(f"{r}/pool", x, 3, 1, 1), pp, 1)
        x = n.concat(f"{r}/output", [b1, b2, b3, b4])
        if aux and r in ("inception_4a", "inception_4d"):
            i = 1 if r == "inception_4a" else 2
            a = n.pool(f"loss{i}/ave_pool", x, 5, 3, kind="AVE")
            a = n.relu(f"loss{i}/relu_conv", n.conv(f"loss{i}/conv", a, 128, 1))
            a = n.relu(f"loss{i}/relu_fc", n.fc(f"loss{i}/fc", a, 128 * 16, 1024))
            n.fc(f"loss{i}/classifier", a, 1024, 1000)
    x = n.pool("pool5/7x7_s1", x, 7, 1, kind="AVE")
    n.fc("loss3/classifier", x, 1024, 1000)
    return n


def vgg16_net() -> Net:
    """VGG_ILSVRC_16_layers_deploy (V1): conv3 pad 1 everywhere, 2x2/2 max-pools."""
    n, x = Net("vgg16", 224, seed=3), "data"
    for block, (width, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], 1):
        for i in range(1, convs + 1):
            x = n.relu(f"relu{block}_{i}", n.conv(f"conv{block}_{i}", x, width, 3, 1, 1))
        x = n.pool(f"pool{block}", x, 2, 2)
    x = n.relu("relu6", n.fc("fc6", x, 512 * 49, 4096))
    x = n.relu("relu7", n.fc("fc7", x, 4096, 4096))
    n.fc("fc8", x, 4096, 1000)
    return n


def nin_net() -> Net:
    """NIN-Imagenet deploy (V1): mlpconv blocks conv/cccp/cccp, pools 3x3/2, average pool 6x6."""
    n, x, relu = Net("nin", 224, seed=4), "data", iter(range(13))
    blocks = [
        ("conv1", 96, 11, 4, 0, "cccp1", "cccp2", 96),
        ("conv2", 256, 5, 1, 2, "cccp3", "cccp4", 256),
        ("conv3", 384, 3, 1, 1, "cccp5", "cccp6", 384),
        ("conv4-1024", 1024, 3, 1, 1, "cccp7-1024", "cccp8-1024", 1000),
    ]
    for b, (conv, width, k, s, p, c1, c2, last) in enumerate(blocks):
        x = n.relu(f"relu{next(relu)}", n.conv(conv, x, width, k, s, p))
        x = n.relu(f"relu{next(relu)}", n.conv(c1, x, width, 1))
        x = n.relu(f"relu{next(relu)}", n.conv(c2, x, last, 1))
        x = n.pool(f"pool{b}", x, 3, 2) if b < 3 else n.pool("pool4", x, 6, 1, kind="AVE")
    return n


def resnet50_net() -> Net:
    """ResNet-50-deploy (Kaiming He): conv1 WITH a bias, BatchNorm + Scale after every conv,
    pool1 3x3/2 unpadded, stride 2 in the first 1x1 of res3a/res4a/res5a, average pool 7x7."""
    n = Net("resnet50", 224, seed=5)
    x = n.conv("conv1", "data", 64, 7, 2, 3, bias=True)
    x = n.relu("conv1_relu", n.bn_scale("conv1", "bn_conv1", "scale_conv1", x, eps=0.25))
    x = n.pool("pool1", x, 3, 2)

    def conv_bn(name, inp, out, k, s=1, p=0, relu=True):
        y = n.conv(f"res{name}", inp, out, k, s, p, bias=False)
        y = n.bn_scale(f"res{name}", f"bn{name}", f"scale{name}", y)
        return n.relu(f"res{name}_relu", y) if relu else y

    for stage, (width, units) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], 2):
        for j in range(units):
            u = f"{stage}{'abcdef'[j]}"
            s = 2 if j == 0 and stage > 2 else 1
            short = conv_bn(f"{u}_branch1", x, width * 4, 1, s, relu=False) if j == 0 else x
            y = conv_bn(f"{u}_branch2a", x, width, 1, s)
            y = conv_bn(f"{u}_branch2b", y, width, 3, 1, 1)
            y = conv_bn(f"{u}_branch2c", y, width * 4, 1, relu=False)
            x = n.relu(f"res{u}_relu", n.eltwise(f"res{u}", short, y))
    x = n.pool("pool5", x, 7, 1, kind="AVE")
    n.fc("fc1000", x, 2048, 1000)
    return n


# ---- helpers -----------------------------------------------------------------------------------
def photos_blob(spec: WeightSpec) -> torch.Tensor:
    t = eval_transform_from_spec(spec)
    return torch.stack([t(load_image(p)) for p in PHOTOS])


def ours(tmp_path: Path, caffemodel: Path, name: str, via_file: bool = True, **options):
    """convzoo's logits for the photos: convert, save, `create_model(weights=...)` (which applies
    the WeightSpec's model_kwargs); `via_file=False` skips the round trip through a safetensors
    file for the largest nets (the round trip is the same code for every net)."""
    state, spec = convert("caffe", str(caffemodel), name, **options)
    if via_file:
        path = tmp_path / f"{name}.safetensors"
        save_weights(str(path), state, spec)
        model = create_model(name, weights=str(path)).eval()
    else:
        model = create_model(name, num_classes=spec.num_classes, **spec.model_kwargs).eval()
        model.load_state_dict(state, strict=True)
    del state
    x = photos_blob(spec)
    with torch.no_grad():
        return model, x, model(x).numpy()


def opencv(proto: Path, caffemodel: Path, x: torch.Tensor, outputs: list[str]):
    cv2 = pytest.importorskip("cv2")  # opencv-python-headless<5, the `test` extra
    cv2.setNumThreads(torch.get_num_threads())
    net = cv2.dnn.readNetFromCaffe(str(proto), str(caffemodel))
    net.setInput(np.ascontiguousarray(x.numpy()))
    got = net.forward(outputs)
    return [g.reshape(g.shape[0], -1) for g in got]


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err <= RTOL, f"{what}: max |ours - OpenCV| / max |OpenCV| = {err:.2e}"
    assert got.shape == want.shape and np.abs(want).max() > 1e-3  # a real comparison, not two zeros


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    pytest.importorskip("cv2")
    folder = tmp_path_factory.mktemp("alexnet")
    proto, model = alexnet_net(caffenet=False).write(folder)
    caffenet_proto = alexnet_net(caffenet=True).write_proto(folder)  # same layers and blobs
    return folder, proto, caffenet_proto, model


# ---- logits against OpenCV ---------------------------------------------------------------------
@requires_cv2
@pytest.mark.parametrize("name", ["alexnet_original", "caffenet"])
def test_alexnet_and_caffenet_match_opencv(name, alexnet_file):
    folder, proto, caffenet_proto, model_file = alexnet_file
    _, x, got = ours(folder, model_file, name, via_file=name == "caffenet")
    assert x.shape == (len(PHOTOS), 3, 227, 227)
    (want,) = opencv(caffenet_proto if name == "caffenet" else proto, model_file, x, ["fc8"])
    assert_close(got, want, name)


@requires_cv2
def test_googlenet_with_aux_heads_matches_opencv(tmp_path):
    proto, model_file = googlenet_net(aux=True).write(tmp_path)
    model, x, got = ours(tmp_path, model_file, "googlenet_original")
    assert read_spec(str(tmp_path / "googlenet_original.safetensors")).model_kwargs == {
        "caffe_pooling": True,
        "aux_logits": True,
    }
    want, aux1, aux2 = opencv(
        proto, model_file, x, ["loss3/classifier", "loss1/classifier", "loss2/classifier"]
    )
    assert_close(got, want, "googlenet loss3")
    features = {}
    hooks = [
        getattr(model, f"inception_{r}").register_forward_hook(
            lambda m, i, o, r=r: features.__setitem__(r, o)
        )
        for r in ("4a", "4d")
    ]
    with torch.no_grad():
        model(x)
        assert_close(model.aux1(features["4a"]).numpy(), aux1, "googlenet loss1")
        assert_close(model.aux2(features["4d"]).numpy(), aux2, "googlenet loss2")
    for h in hooks:
        h.remove()


@requires_cv2
def test_googlenet_without_aux_heads(tmp_path):
    """deploy-only files (no loss1/loss2) give a model without auxiliary heads."""
    proto, model_file = googlenet_net(aux=False).write(tmp_path)
    model, x, got = ours(tmp_path, model_file, "googlenet_original")
    assert not hasattr(model, "aux1")
    (want,) = opencv(proto, model_file, x, ["loss3/classifier"])
    assert_close(got, want, "googlenet (no aux)")


@requires_cv2
def test_vgg16_v1_format_matches_opencv(tmp_path):
    proto, model_file = vgg16_net().write(tmp_path, v1=True)
    _, x, got = ours(tmp_path, model_file, "vgg_d", via_file=False)
    (want,) = opencv(proto, model_file, x, ["fc8"])
    assert_close(got, want, "vgg_d (V1 file)")


@requires_cv2
def test_nin_v1_format_matches_opencv(tmp_path):
    proto, model_file = nin_net().write(tmp_path, v1=True)
    _, x, got = ours(tmp_path, model_file, "nin")
    (want,) = opencv(proto, model_file, x, ["pool4"])
    assert_close(got, want, "nin (V1 file)")


@requires_cv2
def test_resnet50_batchnorm_scale_and_conv1_bias_match_opencv(tmp_path):
    proto, model_file = resnet50_net().write(tmp_path)
    model, x, got = ours(tmp_path, model_file, "resnet50_paper")
    (want,) = opencv(proto, model_file, x, ["fc1000"])
    assert_close(got, want, "resnet50_paper")
    assert model.conv1.bias is None and not model.maxpool.padding and model.maxpool.ceil_mode


def test_caffenet_counts_by_hand_and_layer_order():
    """CaffeNet = alexnet_original's layers with pool before LRN: params 60,965,224 (summed by hand
    in test_classic.py); MACs by hand at 227: conv1 55*55*96*363 = 105,415,200; conv2 27*27*256*1200
    = 223,948,800; conv3 13*13*384*2304 = 149,520,384; conv4 13*13*384*1728 = 112,140,288; conv5
    13*13*256*1728 = 74,760,192; fc6 9216*4096 = 37,748,736; fc7 16,777,216; fc8 4,096,000;
    sum 724,406,816 (LRN and pooling are not multiply-accumulates)."""
    from convzoo.analysis.profile import profile

    with torch.device("meta"):
        model = create_model("caffenet")
    prof = profile(model, 227)
    assert (prof.params, prof.macs) == (60_965_224, 724_406_816)
    order = [n for n, _ in model.features.named_children()]
    assert order[:4] == ["conv1", "relu1", "pool1", "norm1"] and order[4:8] == [
        "conv2",
        "relu2",
        "pool2",
        "norm2",
    ]
    lrn = model.features.norm1
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (
        5,
        pytest.approx(1e-4),
        0.75,
        1.0,
    )  # Caffe's alpha/n form


# ---- preprocessing -----------------------------------------------------------------------------
def caffe_classifier_input(path, mean_bgr, crop: int) -> np.ndarray:
    """python/caffe/classifier.py + io.Transformer, written out: the image in [0, 1] RGB squashed
    to image_dims 256x256, centre crop at int(128 -/+ crop/2), HWC -> CHW, channel_swap (2, 1, 0),
    raw_scale 255, minus the mean. (Caffe resizes with skimage; PIL's bilinear resize is used
    here as convzoo uses it, so the comparison is exact; the squash itself is what is tested.)"""
    from PIL import Image

    img = load_image(path).resize((256, 256), Image.BILINEAR)
    rgb01 = np.asarray(img, dtype=np.float32) / 255.0
    lo = int(128 - crop / 2.0)
    crop_img = rgb01[lo : lo + crop, lo : lo + crop]
    chw = crop_img.transpose(2, 0, 1)[[2, 1, 0]] * 255.0
    return chw - np.asarray(mean_bgr, dtype=np.float32).reshape(3, 1, 1)


@pytest.mark.parametrize("name, crop", [("caffenet", 227), ("vgg_d", 224)])
def test_preprocessing_is_caffes_classifier(name, crop):
    from convzoo.interop.caffe import weight_spec

    spec = weight_spec(name, 1000, "x.caffemodel", lambda s: None)
    assert (spec.channel_order, spec.pixel_scale, spec.resize_mode, spec.std) == (
        "BGR",
        255.0,
        "squash",
        (1, 1, 1),
    )
    got = photos_blob(spec).numpy()
    want = np.stack([caffe_classifier_input(p, (104, 117, 123), crop) for p in PHOTOS])
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-3
    # the inverse used to display an input (CAM overlays) gives the RGB crop in [0, 1] back
    from convzoo.data.transforms import to_display

    back = to_display(spec, torch.from_numpy(got[0])).numpy()
    assert np.abs(back - (want[0] + np.reshape((104, 117, 123), (3, 1, 1)))[[2, 1, 0]] / 255).max() < 1e-5
    # and a photo that is not square really is squashed (both sides to 256), not shorter-side resized
    plain = WeightSpec(model=name, num_classes=1000, input_size=crop, resize_size=256)
    assert np.abs(eval_transform_from_spec(plain)(load_image(PHOTOS[0])).numpy() - got[0]).max() > 1


def test_weightspec_fields_validated_and_round_trip():
    spec = WeightSpec(
        model="caffenet", num_classes=1000, channel_order="BGR", pixel_scale=255, resize_mode="squash"
    )
    again = WeightSpec.from_json(spec.to_json())
    assert (again.channel_order, again.pixel_scale, again.resize_mode) == ("BGR", 255.0, "squash")
    old = WeightSpec.from_json('{"model": "alexnet", "num_classes": 1000}')  # files written before the fields
    assert (old.channel_order, old.pixel_scale, old.resize_mode) == ("RGB", 1.0, "shorter")
    for bad in (
        {"channel_order": "GBR"},
        {"resize_mode": "stretch"},
        {"pixel_scale": 0},
        {"pixel_scale": "255"},
    ):
        with pytest.raises(ValueError):
            WeightSpec(model="x", num_classes=1, **bad)


def test_export_sidecar_records_caffe_preprocessing():
    from convzoo.interop.caffe import weight_spec
    from convzoo.interop.export import sidecar_doc

    doc = sidecar_doc(weight_spec("caffenet", 1000, "x.caffemodel", lambda s: None), "onnx", 227)
    pre = doc["preprocessing"]
    assert (pre["channel_order"], pre["pixel_scale"], pre["resize_mode"]) == ("BGR", 255.0, "squash")
    assert pre["mean"] == [104.0, 117.0, 123.0] and "BGR" in doc["input"]["normalised"]


# ---- the mean --------------------------------------------------------------------------------
def test_mean_options(tmp_path):
    from convzoo.interop.caffe import resolve_mean

    assert resolve_mean(None)[0] == (104.0, 117.0, 123.0)
    assert resolve_mean("103.939,116.779,123.68")[0] == (103.939, 116.779, 123.68)
    assert resolve_mean((1, 2, 3))[0] == (1.0, 2.0, 3.0)
    image = np.random.default_rng(0).uniform(0, 255, (1, 3, 8, 6)).astype(np.float32)
    blob = SCHEMA["BlobProto"](num=1, channels=3, height=8, width=6)
    blob.data.extend(image.ravel().tolist())
    mean_file = tmp_path / "mean.binaryproto"
    mean_file.write_bytes(blob.SerializeToString())
    got = resolve_mean(str(mean_file))[0]
    assert np.allclose(got, image[0].mean(axis=(1, 2)), rtol=1e-6)
    for bad in ("1,2", "a,b,c", "1,2,nan"):
        with pytest.raises(UserError):
            resolve_mean(bad)
    (tmp_path / "bad.binaryproto").write_bytes(b"\xff" * 50)
    with pytest.raises(UserError):
        resolve_mean(str(tmp_path / "bad.binaryproto"))


def test_mean_is_recorded_and_only_for_caffe(tmp_path):
    with pytest.raises(UserError, match="does not apply"):
        convert("torchvision", str(tmp_path / "x.pth"), "resnet18", mean="1,2,3")


# ---- bad files -------------------------------------------------------------------------------
def _one_line_error(path, name="caffenet"):
    with pytest.raises(UserError) as e:
        convert("caffe", str(path), name)
    assert one_line(e.value)
    return str(e.value)


def small_net(conv1_shape=(96, 3, 11, 11), fc8=(10, 4096), extra=None) -> Net:
    n = Net("small", 227)
    n.layers += [
        ("conv1", "Convolution", [np.zeros(conv1_shape), np.zeros(conv1_shape[0])], None),
        ("fc8", "InnerProduct", [np.zeros(fc8), np.zeros(fc8[0])], None),
    ]
    if extra:
        n.layers.append((extra, "Convolution", [np.zeros((2, 2, 1, 1))], None))
    return n


def test_garbage_and_truncated_files(tmp_path):
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "Caffe" in _one_line_error(garbage)
    _, good = small_net().write(tmp_path)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(data[: len(data) // 2])
    _one_line_error(truncated)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    assert "no layers with weights" in _one_line_error(empty)
    assert "not found" in _one_line_error(tmp_path / "missing.caffemodel")
    huge = tmp_path / "huge.caffemodel"  # sparse: 1 GB that NIN's 30 MB of weights cannot need
    with open(huge, "wb") as f:
        f.truncate(1 << 30)
    assert "refused" in _one_line_error(huge, "nin")


def test_blob_shapes_that_do_not_fit_name_the_layer(tmp_path):
    _, f = small_net(conv1_shape=(96, 3, 7, 7)).write(tmp_path)
    assert "'conv1'" in _one_line_error(f)
    folder = tmp_path / "b"
    folder.mkdir()
    _, f = small_net().write(folder)  # conv1 fits; conv2 is absent
    assert "'conv2'" in _one_line_error(f)
    assert "'loss3/classifier'" in _one_line_error(f, "googlenet_original")
    folder = tmp_path / "c"
    folder.mkdir()
    _, f = small_net(extra="conv0").write(folder)
    with pytest.raises(UserError, match="'conv2'"):  # a missing layer is named before unused ones
        convert("caffe", str(f), "caffenet")


def test_blob_count_must_match_its_shape(tmp_path):
    msg = SCHEMA["NetParameter"](name="lying")
    layer = msg.layer.add(name="conv1", type="Convolution")
    blob = layer.blobs.add()
    blob.shape.dim.extend([96, 3, 11, 11])
    blob.data.extend([0.0] * 10)  # 10 values for a 34,848-value shape
    path = tmp_path / "lying.caffemodel"
    path.write_bytes(msg.SerializeToString())
    assert "conv1" in _one_line_error(path)


def test_an_unmapped_layer_with_weights_is_refused(alexnet_file, tmp_path):
    """Every blob is used: a file with one more weight layer than the model is refused by name."""
    from convzoo.interop.caffe import convert_state
    from convzoo.interop.caffe_format import read_caffemodel

    model_file = alexnet_file[3]
    net = read_caffemodel(str(model_file))
    net.layers.append(type(net.layers[0])("fc9", "InnerProduct", net.layers[-1].blobs))
    with pytest.raises(UserError, match="'fc9'"):
        convert_state(net, "alexnet_original")


# ---- the nets without an OpenCV comparison here: names of the releases, every key covered ---------
def _synthetic_net(name: str, rules, target):
    """A Net with a zero blob of the right shape for every layer the rules name (bytes, no file)."""
    from convzoo.interop.caffe_format import Blob, Layer
    from convzoo.interop.caffe_format import Net as CaffeNet

    layers = {}

    def blob(shape):
        return Blob(tuple(shape), bytes(4 * math.prod(shape)), 4)

    for kind, *args in rules:
        if kind == "param":
            caffe, module = args
            layers[caffe] = [blob(target[k]) for k in (f"{module}.weight", f"{module}.bias") if k in target]
        else:
            conv, bn, scale, conv_key, bn_key = args
            ch = target[f"{bn_key}.running_mean"]
            layers[conv], layers[scale] = [blob(target[f"{conv_key}.weight"])], [blob(ch), blob(ch)]
            layers[bn] = [blob(ch), blob(ch), Blob((1,), np.float32(1).tobytes(), 4)]
    return CaffeNet(name, "layer", [Layer(n, "x", b) for n, b in layers.items()])


@pytest.mark.parametrize(
    "name, present, absent",
    [
        (
            "resnet101_paper",
            ["res3b3_branch2a", "res4b22_branch2c", "res5c_branch2b", "res4a_branch1"],
            ["res4c_branch2a"],
        ),
        (
            "resnet152_paper",
            ["res3b7_branch2a", "res4b35_branch2c", "bn4b35_branch2c", "scale5a_branch1"],
            ["res3c_branch2a"],
        ),
    ],
)
def test_key_maps_of_the_other_releases_cover_every_key(name, present, absent):
    from convzoo.interop.caffe import RULES, _target, build_kwargs, convert_state

    target = _target(name, 1000, tuple(sorted(build_kwargs(name, False).items())))
    rules = RULES[name](name, target)
    net = _synthetic_net(name, rules, target)
    names = {layer.name for layer in net.layers}
    assert set(present) <= names and not set(absent) & names
    state, mapping = convert_state(net, name)  # asserts: every layer used, every key filled
    assert set(state) == set(target) and len({k for _, k, _ in mapping}) == len(mapping)


def test_vgg19_key_map_names_every_layer():
    """VGG-19 (vgg_e) uses VGG-16's rules (paper rows named as in the release); checked by name
    only here (a synthetic 144M-float file is not worth its seconds: VGG-16's is compared above)."""
    from convzoo.interop.caffe import RULES, _target, build_kwargs

    target = _target("vgg_e", 1000, tuple(sorted(build_kwargs("vgg_e", False).items())))
    rules = RULES["vgg_e"]("vgg_e", target)
    names = [caffe for _, caffe, _ in rules]
    assert names == [f"conv{b}_{i}" for b, n in enumerate((2, 2, 4, 4, 4), 1) for i in range(1, n + 1)] + [
        "fc6",
        "fc7",
        "fc8",
    ]
    assert {f"{path}.{p}" for _, _, path in rules for p in ("weight", "bias")} == set(target)


def test_v0_layers_nested_in_v1_are_read(tmp_path):
    """The 2013 format (V0LayerParameter: name = 1, type = 2, blobs = 50, inside a V1 layer's
    field 1) is read too; encoded here by hand-built protobuf messages of the test's schema."""
    from google.protobuf import descriptor_pb2 as d
    from google.protobuf import descriptor_pool, message_factory

    from convzoo.interop.caffe_format import as_array, read_caffemodel

    F = d.FieldDescriptorProto
    fd = d.FileDescriptorProto(name="v0_subset.proto", package="caffe", syntax="proto2")
    fd.dependency.append("test_caffe_subset.proto")
    v0 = fd.message_type.add(name="V0LayerParameter")
    v0.field.add(name="name", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    v0.field.add(name="type", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    v0.field.add(
        name="blobs", number=50, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".caffe.BlobProto"
    )
    v1 = fd.message_type.add(name="V1WithV0")
    v1.field.add(
        name="layer",
        number=1,
        type=F.TYPE_MESSAGE,
        label=F.LABEL_OPTIONAL,
        type_name=".caffe.V0LayerParameter",
    )
    net = fd.message_type.add(name="NetWithV0")
    net.field.add(
        name="layers", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".caffe.V1WithV0"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(d.FileDescriptorProto.FromString(SCHEMA["BlobProto"].DESCRIPTOR.file.serialized_pb))
    pool.Add(fd)
    Net0 = message_factory.GetMessageClass(pool.FindMessageTypeByName("caffe.NetWithV0"))
    msg = Net0()
    layer = msg.layers.add().layer
    layer.name, layer.type = "conv1", "conv"
    weights = np.arange(96 * 3 * 11 * 11, dtype=np.float32).reshape(96, 3, 11, 11)
    _fill_blob(layer.blobs.add(), weights, v1=True)
    path = tmp_path / "v0.caffemodel"
    path.write_bytes(msg.SerializeToString())
    parsed = read_caffemodel(str(path))
    assert parsed.format == "V1" and [x.name for x in parsed.layers] == ["conv1"]
    assert np.array_equal(as_array(parsed.layers[0].blobs[0], (96, 3, 11, 11)), weights)


def test_fine_tuning_refuses_caffe_preprocessed_weights(tmp_path):
    """Training feeds RGB 0-1 input: starting from BGR 0-255 weights would silently waste them."""
    from convzoo.factory import create_model
    from convzoo.recipes import resolve
    from convzoo.training.finetune import prepare_model
    from convzoo.weights import WeightSpec, save_weights

    path = str(tmp_path / "caffe_like.safetensors")
    spec = WeightSpec(
        model="resnet20_cifar",
        num_classes=10,
        channel_order="BGR",
        pixel_scale=255.0,
        mean=(104.0, 117.0, 123.0),
        std=(1.0, 1.0, 1.0),
        input_size=32,
    )
    save_weights(path, create_model("resnet20_cifar", num_classes=10), spec)
    cfg = resolve("resnet20_cifar", sets=[f"finetune.weights={path}"])
    with pytest.raises(UserError, match="expect Caffe's input"):
        prepare_model(cfg, 10, lambda s: None)
    spec.channel_order, spec.pixel_scale, spec.mean, spec.std = "RGB", 1.0, (0.5,) * 3, (0.25,) * 3
    save_weights(path, create_model("resnet20_cifar", num_classes=10), spec)
    net, _ = prepare_model(cfg, 10, lambda s: None)
    assert net.fc.out_features == 10
