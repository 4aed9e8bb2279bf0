"""The official CIFAR-10 python batches, read with a restricted unpickler.

The batches (`cifar-10-batches-py/data_batch_1..5`, `test_batch`) are Python pickles, and a
pickle can call any importable function while it loads. So they are never read with plain
`pickle.load`: `find_class` allows exactly the callables that rebuild a numpy array
(`numpy.core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype`, and
`numpy.core.numeric._frombuffer` for protocol-5 pickles, under numpy 1 and numpy 2 module
names); dicts, lists, bytes, str and int need no callable. Anything else (`os.system`,
`builtins.eval`, `_codecs.encode`, ...) is refused with a UserError before it is called, and
the result must then look like a CIFAR batch (uint8 data [N, 3072], N integer labels 0..9).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np

from ..errors import UserError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

_ALLOWED: dict[tuple[str, str], Callable[..., object]] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_mod}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    # private numpy helper that pickles of arrays name; numpy's stubs omit it
    _ALLOWED[(f"{_mod}.numeric", "_frombuffer")] = _numeric._frombuffer  # type: ignore[attr-defined]


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent ids")


def load_cifar_batch(path: str) -> tuple[np.ndarray, list[int]]:
    """(images uint8 [N, 32, 32, 3], labels) from one CIFAR-10 python batch file."""
    try:
        with open(path, "rb") as f:
            # encoding="bytes": the official files are Python 2 pickles with byte-string keys
            batch = RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise UserError(f"{path}: {e} (CIFAR batches are read with a restricted unpickler)") from None
    except Exception as e:  # garbage fails in the unpickler in many ways; all mean "not a batch"
        raise UserError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict):
        raise UserError(f"{path}: not a CIFAR-10 python batch (no dict)")
    # latin-1: any byte string decodes; a key that is not ASCII simply matches nothing below
    batch = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
        or not isinstance(labels, list)
        or len(labels) != len(data)
        or not all(isinstance(t, int) and 0 <= t < 10 for t in labels)
    ):
        raise UserError(
            f"{path}: not a CIFAR-10 python batch (expected uint8 data [N, 3072] and N labels 0..9)"
        )
    # rows are 1024 red, 1024 green, 1024 blue values, each a 32x32 image in row-major order
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, list(labels)
