"""The one unpickler that reads CIFAR's python batches: plain containers and numeric arrays only.

CIFAR is distributed as pickles, and a pickle may name any importable callable and have it
called: a hostile batch file would run its code in ``pickle.load``. ``load`` refuses every name
except the few that rebuilding a numpy array needs, and gives it stand-ins for them that check
what the file asks for, so that no file can run code, forge an object dtype (whose "data" numpy
would read as pointers) or claim more bytes than it holds. numpy and the standard library only.
"""

from __future__ import annotations

import math
import pickle
from typing import BinaryIO, Optional

import numpy as np

# numpy's pickled state of a plain dtype: (version, byte order, subarray, names, fields, itemsize,
# alignment, flags[, metadata]); the last five are -1, -1, 0 and None unless the dtype is structured,
# flexible or holds Python objects, all of which a CIFAR batch never needs.
PLAIN_DTYPES = {"b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8"}


class _PlainDtype:
    """Stands in for ``numpy.dtype`` while a batch is unpickled: plain numbers only.

    numpy's own dtype takes any state a file gives it, including fields and flags that
    contradict each other, and numpy then trusts them (a forged object field is a pointer
    read from the file). This class accepts only the state numpy writes for a plain dtype.
    """

    def __init__(self, name, _align=False, _copy=False) -> None:
        if name not in PLAIN_DTYPES:
            raise pickle.UnpicklingError(f"refused the dtype {name!r}: a CIFAR batch holds plain numbers only")
        self.dtype = np.dtype(name)

    def __setstate__(self, state) -> None:
        plain = (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
                 and state[1] in ("<", ">", "|", "=") and state[2:5] == (None, None, None)
                 and state[5:8] == (-1, -1, 0) and state[8:] in ((), (None,)))
        if not plain:
            raise pickle.UnpicklingError(f"refused a {self.dtype} dtype with the state {str(state)[:80]}: "
                                         "structured, flexible or object dtypes are not allowed")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class _PlainArray:
    """Stands in for an ndarray while a batch is unpickled; ``array`` is built only from bytes
    that are really in the file, after checking that they are exactly what the shape needs."""

    def __init__(self, cls, _shape, _typecode) -> None:
        if cls is not np.ndarray:
            raise pickle.UnpicklingError("refused an array of a subclass of ndarray")
        self.array: Optional[np.ndarray] = None

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("refused an array state that is not (version, shape, dtype, order, data)")
        _version, shape, dtype, fortran_order, raw = state
        if not isinstance(dtype, _PlainDtype):
            raise pickle.UnpicklingError("refused an array whose dtype was not unpickled as a plain dtype")
        if not (isinstance(shape, tuple) and all(isinstance(size, int) and size >= 0 for size in shape)):
            raise pickle.UnpicklingError(f"refused the array shape {str(shape)[:80]}")
        if isinstance(raw, str):  # Python 2 strings, read as latin1, hold the raw bytes one per character
            raw = raw.encode("latin1")
        if not isinstance(raw, bytes) or len(raw) != math.prod(shape) * dtype.dtype.itemsize:
            raise pickle.UnpicklingError(f"refused an array of shape {shape} whose data is not "
                                         f"{math.prod(shape) * dtype.dtype.itemsize} bytes long")
        order = "F" if fortran_order else "C"
        self.array = np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order=order).copy()


def _latin1_encode(text, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 uses it in protocol-2 pickles of raw bytes, and nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refused _codecs.encode other than of text to latin1")
    return text.encode("latin1")


def _empty_bytes(*args) -> bytes:
    """``bytes()``, which protocol 2 writes for the data of an empty array; ``bytes(n)`` would allocate."""
    if args:
        raise pickle.UnpicklingError("refused bytes() with arguments")
    return b""


def _with_arrays(value):
    """The unpickled batch with every stand-in replaced by its array."""
    if isinstance(value, _PlainArray):
        return value.array
    if isinstance(value, dict):
        return {key: _with_arrays(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_arrays(item) for item in value]
    return value


class BatchUnpickler(pickle.Unpickler):
    """Reads a CIFAR batch: plain containers and numeric arrays only, never arbitrary code.

    A pickle may name any importable callable and have it called; this one refuses every
    name except those that rebuilding a numpy array needs, and gives it stand-ins for them
    that check what the file asks for (numpy 2 writes numpy._core, the original CIFAR files
    numpy.core; ``_codecs.encode`` turns the text that Python 3 writes for raw bytes in
    protocol 2 back into bytes).
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _PlainArray,
        ("numpy._core.multiarray", "_reconstruct"): _PlainArray,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _PlainDtype,
        ("_codecs", "encode"): _latin1_encode,
        ("__builtin__", "bytes"): _empty_bytes,
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR batch holds only arrays and lists")
        return self.ALLOWED[(module, name)]


def load(file: BinaryIO):
    """The content of one batch or meta file, arrays as numpy arrays; raises pickle.UnpicklingError
    (or the error of a truncated file) for anything else. latin1 turns Python 2's strings into str
    and keeps numpy's raw bytes intact."""
    return _with_arrays(BatchUnpickler(file, encoding="latin1").load())
