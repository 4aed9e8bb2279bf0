"""Just enough of the MATLAB 5 MAT-file format to read the ILSVRC-2012 devkit's `meta.mat`.

The devkit's validation ground truth (`ILSVRC2012_validation_ground_truth.txt`) gives one
ILSVRC2012_ID (1..1000) per image, in the devkit's own class order, which is not the sorted
WordNet-id order every framework uses; the mapping ID -> WordNet id is the struct array
`synsets` in `data/meta.mat`. Reading it would otherwise need scipy for this one file.

Supported: level-5 MAT files (MATLAB 5 to v7, compressed or not, either byte order) holding
numeric, char, cell and struct arrays. Not supported: v7.3 (HDF5), sparse, object, complex
values (not used by meta.mat). Format: "MAT-File Format", MathWorks, chapter 1.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from ..errors import UserError

_NUMERIC = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MI_MATRIX, _MI_COMPRESSED, _MI_UTF8, _MI_UTF16 = 14, 15, 16, 17
_MX_CELL, _MX_STRUCT, _MX_CHAR = 1, 2, 4


class _Reader:
    def __init__(self, buf: bytes, endian: str):
        self.buf, self.e = buf, endian

    def element(self, pos: int) -> tuple[int, bytes, int]:
        """(type, data, position of the next element) of the element starting at `pos`."""
        word, nbytes = struct.unpack_from(self.e + "II", self.buf, pos)
        if word >> 16:  # small element: 4-byte tag, data inline
            n, typ = word >> 16, word & 0xFFFF
            return typ, self.buf[pos + 4 : pos + 4 + n], pos + 8
        typ, start = word, pos + 8
        end = start + nbytes
        if end > len(self.buf):
            raise ValueError("element runs past the end of the file")
        data = self.buf[start:end]
        if typ == _MI_COMPRESSED:
            return typ, data, end  # compressed elements are not padded
        return typ, data, start + (nbytes + 7) // 8 * 8

    def values(self, typ: int, data: bytes):
        if typ in _NUMERIC:
            return np.frombuffer(data, self.e + _NUMERIC[typ])
        if typ == _MI_UTF8:
            return data.decode("utf-8")
        if typ == _MI_UTF16:
            return data.decode("utf-16-le" if self.e == "<" else "utf-16-be")
        raise ValueError(f"unsupported data type {typ}")

    def matrix(self, data: bytes):
        """Decode the body of one miMATRIX element."""
        if not data:
            return None  # empty array
        sub = _Reader(data, self.e)
        _, flags, pos = sub.element(0)
        mx = sub.values(6, flags)[0] & 0xFF
        _, dims, pos = sub.element(pos)
        shape = tuple(int(d) for d in sub.values(5, dims))
        _, _name, pos = sub.element(pos)
        count = math.prod(shape)
        if count < 0 or count > len(data):  # every element takes at least a byte of the matrix
            raise ValueError(f"array declares {shape} = {count:,} elements in {len(data):,} bytes")
        if mx == _MX_CELL:
            out = []
            for _ in range(count):
                _, d, pos = sub.element(pos)
                out.append(sub.matrix(d))
            return out
        if mx == _MX_STRUCT:
            _, width_data, pos = sub.element(pos)
            width = int(sub.values(5, width_data)[0])
            _, names, pos = sub.element(pos)
            fields = [names[i : i + width].split(b"\0", 1)[0].decode() for i in range(0, len(names), width)]
            out = []
            for _ in range(count):
                item = {}
                for f in fields:
                    _, d, pos = sub.element(pos)
                    item[f] = sub.matrix(d)
                out.append(item)
            return out
        typ, real, pos = sub.element(pos)
        if mx == _MX_CHAR:
            if typ in (_MI_UTF8, _MI_UTF16):
                return sub.values(typ, real)
            codes = sub.values(typ, real).reshape(shape, order="F")
            return "\n".join("".join(map(chr, row)) for row in np.atleast_2d(codes))
        if mx in (5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15):  # double, single, (u)int8..64
            return sub.values(typ, real).reshape(shape, order="F")
        raise ValueError(f"unsupported MATLAB array class {mx}")


MAX_INFLATED = 64 << 20  # meta.mat inflates to about 1 MB


def _inflate(data: bytes) -> bytes:
    """A compressed element, refused past MAX_INFLATED bytes instead of filling memory."""
    d = zlib.decompressobj()
    out = d.decompress(data, MAX_INFLATED)
    if d.unconsumed_tail:
        raise ValueError(f"a compressed element inflates to more than {MAX_INFLATED:,} bytes")
    return out


def read_mat5(path: str) -> dict:
    """{variable name: value} of a level-5 MAT-file (numeric -> ndarray, char -> str,
    cell -> list, struct array -> list of dicts; both flattened in column-major order)."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 128 or buf[126:128] not in (b"IM", b"MI"):
        raise ValueError("not a level-5 MAT-file (v7.3/HDF5 files are not supported)")
    reader = _Reader(buf, "<" if buf[126:128] == b"IM" else ">")
    out, pos = {}, 128
    while pos + 8 <= len(buf):
        typ, data, pos = reader.element(pos)
        if typ == _MI_COMPRESSED:
            inner = _Reader(_inflate(data), reader.e)
            typ, data, _ = inner.element(0)
            reader_for = inner
        else:
            reader_for = reader
        if typ != _MI_MATRIX:
            continue
        # the variable name is the third sub-element of the matrix
        sub = _Reader(data, reader.e)
        _, _, p = sub.element(0)
        _, _, p = sub.element(p)
        _, name, _ = sub.element(p)
        out[name.decode()] = reader_for.matrix(data)
    return out


def read_ilsvrc_meta(path: str) -> dict[int, str]:
    """ILSVRC2012_ID -> WordNet id for the 1,000 classes, from the devkit's data/meta.mat."""
    try:
        synsets = read_mat5(path)["synsets"]
        mapping = {int(np.ravel(s["ILSVRC2012_ID"])[0]): str(s["WNID"]) for s in synsets}
    except Exception as e:  # a damaged .mat fails in the parser in many ways; all mean "unreadable"
        raise UserError(f"{path}: cannot read the devkit synsets ({type(e).__name__}: {e})") from None
    return {i: w for i, w in mapping.items() if 1 <= i <= 1000}
