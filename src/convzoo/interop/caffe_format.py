"""Reading Caffe's binary files (`.caffemodel`, `.binaryproto`) without Caffe.

The files are protobuf messages of Caffe's schema, src/caffe/proto/caffe.proto (BVLC/caffe).
This module declares the few messages it needs, with caffe.proto's field numbers, as
descriptors built in Python (descriptor_pb2 -> a private DescriptorPool -> message classes),
and lets the `protobuf` package parse the wire format:

    NetParameter      name = 1; layers = 2 (V1LayerParameter, repeated); layer = 100 (LayerParameter)
    LayerParameter    name = 1; type = 2 (string); bottom = 3; top = 4; blobs = 7 (BlobProto);
                      batch_norm_param = 139
    V1LayerParameter  bottom = 2; top = 3; name = 4; type = 5 (enum LayerType); blobs = 6;
                      layer = 1 (V0LayerParameter: the 2013 format, nested in a V1 layer)
    V0LayerParameter  name = 1; type = 2 (string); blobs = 50
    BlobProto         num = 1, channels = 2, height = 3, width = 4 (legacy 4-D shape);
                      data = 5, diff = 6 (packed float); shape = 7 (BlobShape);
                      double_data = 8, double_diff = 9 (packed double)
    BlobShape         dim = 1 (packed int64)
    BatchNormParameter use_global_stats = 1; moving_average_fraction = 2; eps = 3 (float)

Bounded memory: a packed repeated float is, on the wire, exactly a length-delimited field
holding little-endian IEEE floats - the encoding of a `bytes` field. So `data`/`double_data`
are declared here as `repeated bytes` (a packed field may legally arrive in several chunks,
which are joined): the parser keeps them as one byte string each instead of a Python float
per element, and a blob's element count is checked against the shape the converter expects
before anything is turned into an array. A file written with unpacked floats (not what Caffe
writes) is refused by name. V1 layer types are declared as int32 (the enum's wire form) and
named with `V1_TYPES`, so unknown numbers do not vanish into unknown fields.

Untrusted input: the file size is capped (protobuf's own 2 GiB message limit), every parse
failure becomes a one-line UserError, and blob dimensions are checked before use. Before
protobuf parses anything, `scan_wire` walks the wire format (tags and lengths only, no copies)
and counts the fields of the messages the parser would build - layers, blobs, shapes, data
chunks, names: each costs a few hundred bytes of memory however small on disk (an empty layer is
3 bytes), so a file of millions of them is refused by its count (`MAX_FIELDS`) instead of parsed
into gigabytes. Real models have a few tens of fields per layer and at most thousands of layers.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UserError

MAX_FILE_BYTES = 2**31 - 1  # protobuf refuses larger messages anyway
MAX_MEAN_FILE_BYTES = 256 << 20  # a mean image of 3x256x256 floats is 0.8 MB
MAX_MEAN_FIELDS = 1_000  # shape, dims and the data (in one chunk as Caffe writes it, or a few)

# caffe.proto, V1LayerParameter.LayerType: the enum numbers of the types convzoo's nets use
# (others are kept as "V1:<number>" and only matter if they carry blobs).
V1_TYPES = {
    1: "Accuracy",
    3: "Concat",
    4: "Convolution",
    5: "Data",
    6: "Dropout",
    8: "Flatten",
    12: "ImageData",
    14: "InnerProduct",
    15: "LRN",
    17: "Pooling",
    18: "ReLU",
    20: "Softmax",
    21: "SoftmaxWithLoss",
    22: "Split",
    25: "Eltwise",
    29: "MemoryData",
    39: "Deconvolution",
}

_T: Any = None  # descriptor_pb2.FieldDescriptorProto, imported lazily


def _field(msg, name: str, number: int, kind: str, repeated: bool = False, type_name: str = "") -> None:
    f = msg.field.add(
        name=name,
        number=number,
        type=getattr(_T, f"TYPE_{kind}"),
        label=_T.LABEL_REPEATED if repeated else _T.LABEL_OPTIONAL,
    )
    if type_name:
        f.type_name = f".convzoo_caffe_reader.{type_name}"


@functools.lru_cache(maxsize=1)
def messages() -> dict:
    """The message classes (name -> class) of the subset of caffe.proto described above."""
    global _T
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError:
        raise UserError(
            "reading Caffe files needs the protobuf package: pip install 'convzoo[caffe]'"
        ) from None
    _T = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(
        name="convzoo_caffe_reader.proto", package="convzoo_caffe_reader", syntax="proto2"
    )
    shape = fd.message_type.add(name="BlobShape")
    _field(shape, "dim", 1, "INT64", repeated=True)
    blob = fd.message_type.add(name="BlobProto")
    for name, number in (("num", 1), ("channels", 2), ("height", 3), ("width", 4)):
        _field(blob, name, number, "INT64")
    for name, number in (("data", 5), ("diff", 6), ("double_data", 8), ("double_diff", 9)):
        _field(blob, name, number, "BYTES", repeated=True)  # packed floats as raw bytes (see above)
    _field(blob, "shape", 7, "MESSAGE", type_name="BlobShape")
    bn = fd.message_type.add(name="BatchNormParameter")
    _field(bn, "use_global_stats", 1, "BOOL")
    _field(bn, "moving_average_fraction", 2, "FLOAT")
    _field(bn, "eps", 3, "FLOAT")
    layer = fd.message_type.add(name="LayerParameter")
    _field(layer, "name", 1, "BYTES")  # bytes: a garbage name must not fail UTF-8 decoding
    _field(layer, "type", 2, "BYTES")
    _field(layer, "bottom", 3, "BYTES", repeated=True)
    _field(layer, "top", 4, "BYTES", repeated=True)
    _field(layer, "blobs", 7, "MESSAGE", repeated=True, type_name="BlobProto")
    _field(layer, "batch_norm_param", 139, "MESSAGE", type_name="BatchNormParameter")
    v0 = fd.message_type.add(name="V0LayerParameter")
    _field(v0, "name", 1, "BYTES")
    _field(v0, "type", 2, "BYTES")
    _field(v0, "blobs", 50, "MESSAGE", repeated=True, type_name="BlobProto")
    v1 = fd.message_type.add(name="V1LayerParameter")
    _field(v1, "layer", 1, "MESSAGE", type_name="V0LayerParameter")
    _field(v1, "bottom", 2, "BYTES", repeated=True)
    _field(v1, "top", 3, "BYTES", repeated=True)
    _field(v1, "name", 4, "BYTES")
    _field(v1, "type", 5, "INT32")
    _field(v1, "blobs", 6, "MESSAGE", repeated=True, type_name="BlobProto")
    net = fd.message_type.add(name="NetParameter")
    _field(net, "name", 1, "BYTES")
    _field(net, "layers", 2, "MESSAGE", repeated=True, type_name="V1LayerParameter")
    _field(net, "layer", 100, "MESSAGE", repeated=True, type_name="LayerParameter")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {
        m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{fd.package}.{m.name}"))
        for m in fd.message_type
    }


# ---- parsed form ---------------------------------------------------------------------------
@dataclass
class Blob:
    """One parameter blob: its declared shape and its raw little-endian data (not yet an array)."""

    shape: tuple[int, ...]
    raw: bytes
    itemsize: int  # 4 (data, float) or 8 (double_data)

    @property
    def count(self) -> int:
        return len(self.raw) // self.itemsize


@dataclass
class Layer:
    name: str
    type: str
    blobs: list[Blob]
    bn_eps: float | None = None  # BatchNorm layers: batch_norm_param.eps when set


@dataclass
class Net:
    name: str
    format: str  # "layer" (current) or "V1" (`layers`, enum types)
    layers: list[Layer] = field(default_factory=list)


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


def _blob(msg, where: str) -> Blob:
    if msg.shape.dim:
        shape = tuple(msg.shape.dim)
    else:  # legacy 4-D shape (V1 files: VGG, NIN)
        shape = (msg.num, msg.channels, msg.height, msg.width)
    if any(d < 0 for d in shape) or len(shape) > 8:
        raise UserError(f"{where}: invalid blob shape {list(shape)}")
    chunks, itemsize = (msg.double_data, 8) if msg.double_data else (msg.data, 4)
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one chunk is what Caffe writes
    if len(raw) % itemsize:
        raise UserError(f"{where}: blob data is {len(raw)} bytes, not a whole number of floats")
    if math.prod(shape) != len(raw) // itemsize:
        if not raw:  # unpacked floats (legal protobuf, never written by Caffe) land here too
            raise UserError(f"{where}: blob {list(shape)} has no packed float data")
        raise UserError(
            f"{where}: blob shape {list(shape)} ({math.prod(shape)} values) but "
            f"{len(raw) // itemsize} values stored"
        )
    return Blob(shape, raw, itemsize)


def _layer(msg, v1: bool, index: int) -> Layer:
    if v1 and msg.HasField("layer") and not msg.blobs:  # V0: everything sits in the nested layer
        v0 = msg.layer
        name = _text(v0.name) or f"#{index}"
        blobs = [_blob(b, f"layer {name!r} blob {i}") for i, b in enumerate(v0.blobs)]
        return Layer(name, f"V0:{_text(v0.type)}", blobs)
    name = _text(msg.name) or f"#{index}"
    kind = V1_TYPES.get(msg.type, f"V1:{msg.type}") if v1 else _text(msg.type)
    blobs = [_blob(b, f"layer {name!r} blob {i}") for i, b in enumerate(msg.blobs)]
    eps = None
    if not v1 and msg.HasField("batch_norm_param") and msg.batch_norm_param.HasField("eps"):
        eps = float(msg.batch_norm_param.eps)
    return Layer(name, kind, blobs, eps)


# ---- wire-format pre-scan --------------------------------------------------------------------
MAX_FIELDS = 200_000  # fields in parsed messages: ~30 per layer, a 6,000-layer net; ~70 MB parsed
# the messages the parser builds, and which of their length-delimited fields are messages it builds
_SUBMESSAGES = {
    "NetParameter": {2: "V1LayerParameter", 100: "LayerParameter"},
    "LayerParameter": {7: "BlobProto"},  # batch_norm_param (139): three scalars, no recursion needed
    "V1LayerParameter": {1: "V0LayerParameter", 6: "BlobProto"},
    "V0LayerParameter": {50: "BlobProto"},
    "BlobProto": {7: "BlobShape"},
    "BlobShape": {},
}


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("a truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def scan_wire(data: bytes, root: str, path: str, limit: int = MAX_FIELDS) -> int:
    """The number of fields in `data` (a `root` message) and the messages inside it that the
    parser builds; UserError past `limit` (before any is built) or for a broken wire format."""
    count = 0
    stack = [(0, len(data), root)]
    try:
        while stack:
            pos, end, kind = stack.pop()
            children = _SUBMESSAGES[kind]
            while pos < end:
                key, pos = _varint(data, pos, end)
                number, wire = key >> 3, key & 7
                count += 1
                if count > limit:
                    break
                if wire == 0:
                    _, pos = _varint(data, pos, end)
                elif wire == 1:
                    pos += 8
                elif wire == 5:
                    pos += 4
                elif wire == 2:
                    n, pos = _varint(data, pos, end)
                    if number in children and pos + n <= end:
                        stack.append((pos, pos + n, children[number]))
                    pos += n
                else:  # groups (3, 4): never in Caffe's schema; 6, 7: not protobuf at all
                    raise ValueError(f"wire type {wire}")
                if pos > end:
                    raise ValueError("a field runs past the end of its message")
            if count > limit:
                raise _TooMany
    except _TooMany:
        raise UserError(
            f"{path}: more than {limit:,} protobuf fields (layers, blobs, chunks of data) in "
            f"{len(data):,} bytes; real Caffe files hold far fewer: refused before parsing"
        ) from None
    except ValueError as e:
        raise UserError(
            f"{path} is not a readable Caffe file: {e} (truncated, or not this file type?)"
        ) from None
    return count


class _TooMany(Exception):
    pass


def _read_bytes(path: str, limit: int, what: str) -> bytes:
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    size = os.path.getsize(path)
    if size > limit:
        raise UserError(f"{path} is {size:,} bytes, more than this {what} can be ({limit:,}); refused")
    with open(path, "rb") as f:
        return f.read(size + 1)  # (not `limit`: read() reserves what it is asked for)


def _parse(cls, data: bytes, path: str, what: str):
    from google.protobuf.message import DecodeError

    try:
        return cls.FromString(data)
    except (DecodeError, RuntimeError, ValueError, OverflowError, RecursionError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        reason = reason.split("': ", 1)[-1][:120]  # drop "Error parsing message with type '...'"
        raise UserError(
            f"{path} is not a readable {what}: {reason} (truncated, or not this file type?)"
        ) from None


def read_caffemodel(path: str, max_bytes: int = MAX_FILE_BYTES) -> Net:
    """The layers of a `.caffemodel` (NetParameter), in either format; UserError for anything else.
    `max_bytes` (at most protobuf's 2 GiB): larger files are refused before they are read."""
    limit = min(max_bytes, MAX_FILE_BYTES)
    data = _read_bytes(path, limit, "caffemodel")
    scan_wire(data, "NetParameter", path)  # before protobuf builds what the file declares
    msg = _parse(messages()["NetParameter"], data, path, "Caffe model (.caffemodel NetParameter)")
    del data
    if msg.layer and msg.layers:
        raise UserError(f"{path} mixes current (`layer`) and V1 (`layers`) layers; not a Caffe model")
    v1 = bool(msg.layers)
    net = Net(_text(msg.name), "V1" if v1 else "layer")
    net.layers = [_layer(m, v1, i) for i, m in enumerate(msg.layers if v1 else msg.layer)]
    if not any(layer.blobs for layer in net.layers):
        raise UserError(f"{path} holds no layers with weights; not a trained Caffe model")
    names = [layer.name for layer in net.layers if layer.blobs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UserError(f"{path}: layer name(s) {sorted(dup)[:3]} occur twice; ambiguous")
    return net


def read_mean_file(path: str) -> tuple[float, float, float]:
    """A `.binaryproto` mean (BlobProto, [1,] 3, H, W in Caffe's BGR order) reduced to one value
    per channel, as Caffe's python classifier does (`mean.mean(1).mean(1)`)."""
    data = _read_bytes(path, MAX_MEAN_FILE_BYTES, "mean file")
    scan_wire(data, "BlobProto", path, limit=MAX_MEAN_FIELDS)  # Caffe writes a mean as a few fields
    msg = _parse(messages()["BlobProto"], data, path, "Caffe mean file (.binaryproto BlobProto)")
    del data
    blob = _blob(msg, path)
    dims = list(blob.shape)
    while len(dims) > 1 and dims[0] == 1:  # [1, 3, H, W] -> [3, H, W]
        dims.pop(0)
    if not blob.count or not dims or dims[0] != 3:
        raise UserError(f"{path}: a mean for 3 channels expected, found a blob of shape {list(blob.shape)}")
    values = as_array(blob, (3, blob.count // 3)).astype(np.float64).mean(axis=1)
    if not np.all(np.isfinite(values)):
        raise UserError(f"{path}: the mean holds non-finite values")
    b, g, r = (float(v) for v in values)  # 3 channels, checked above
    return b, g, r


def as_array(blob: Blob, shape: tuple[int, ...]) -> np.ndarray:
    """The blob as a float32 array of `shape` (its count already checked by the caller)."""
    dtype = "<f4" if blob.itemsize == 4 else "<f8"
    return np.frombuffer(blob.raw, dtype=dtype).astype(np.float32).reshape(shape)
