"""A structural check of Universal Binary JSON (XGBoost's ``.ubj`` model format) before XGBoost parses it.

XGBoost's own parser aborts the process (C++ ``terminate``) on an empty file and segfaults on some truncated ones:
a model folder may come from anyone, and its sha256 can be rewritten with the file, so ``predict`` (or a notebook,
or a server loading the model) died with no message. This reader walks the document once, reading nothing but
markers and lengths, and says why a file is not one complete UBJSON value. It checks the structure only: a
well-formed document can still hold trees XGBoost rejects (with an ``XGBoostError``).
"""

from __future__ import annotations

import struct
from typing import Any

#: Payload bytes of each fixed-size value type (UBJSON draft 12): ints, floats, char, booleans, null.
FIXED_SIZES = {b"i": 1, b"U": 1, b"I": 2, b"l": 4, b"L": 8, b"d": 4, b"D": 8, b"C": 1, b"T": 0, b"F": 0, b"Z": 0}
INT_FORMATS = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q"}
MAX_DEPTH = 64


class _Reader:
    """A cursor over the bytes; every read past the end is a ``ValueError`` naming the offset."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = memoryview(data), 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"it ends inside a value at byte {self.pos} of {len(self.data)}")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def marker(self) -> bytes:
        """The next type marker, no-ops ('N') skipped."""
        while True:
            m = bytes(self.take(1))
            if m != b"N":
                return m

    def length(self, m: bytes | None = None) -> int:
        """A length or count: an integer value, its marker read here unless given."""
        m = self.marker() if m is None else m
        if m not in INT_FORMATS:
            raise ValueError(f"byte {self.pos - 1} should start a length, found {m!r}")
        n = struct.unpack(INT_FORMATS[m], self.take(FIXED_SIZES[m]))[0]
        if n < 0:
            raise ValueError(f"a negative length {n} at byte {self.pos}")
        return n


def load_booster(data: bytes) -> Any:
    """An ``xgboost.Booster`` from the bytes of a ``.ubj`` file, checked first: a damaged file is a ``ValueError``
    (XGBoost's own ``XGBoostError`` is one too), never the process's end."""
    import xgboost as xgb  # only where a booster is loaded: this module's check needs none of it

    check_ubjson(data)
    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    return booster


def check_ubjson(data: bytes) -> None:
    """Raise ``ValueError`` unless ``data`` is exactly one complete UBJSON value (XGBoost writes an object)."""
    reader = _Reader(data)
    _value(reader, reader.marker(), 0)
    if reader.pos != len(data):
        raise ValueError(f"{len(data) - reader.pos} bytes follow the document's end")


def _value(r: _Reader, m: bytes, depth: int) -> None:
    if m in FIXED_SIZES:
        r.take(FIXED_SIZES[m])
    elif m in (b"S", b"H"):  # a string, or a high-precision number written as one
        r.take(r.length())
    elif m in (b"[", b"{"):
        if depth >= MAX_DEPTH:
            raise ValueError(f"containers nest deeper than {MAX_DEPTH}")
        _container(r, m == b"{", depth + 1)
    else:
        raise ValueError(f"unknown type marker {m!r} at byte {r.pos - 1}")


def _container(r: _Reader, is_object: bool, depth: int) -> None:
    """An array or object: counted (``#``, maybe typed with ``$``) or ended by its closing marker."""
    m, kind = r.marker(), None
    if m == b"$":
        kind, m = r.marker(), r.marker()
        if m != b"#":
            raise ValueError(f"a typed container lacks its count at byte {r.pos - 1}")
    if m == b"#":
        count = r.length()
        if kind in FIXED_SIZES and not is_object:
            r.take(count * FIXED_SIZES[kind])  # one read, however long the array
            return
        for _ in range(count):
            if is_object:
                r.take(r.length())
            _value(r, kind or r.marker(), depth)
        return
    closing = b"}" if is_object else b"]"
    while m != closing:
        if is_object:
            r.take(r.length(m))
            m = r.marker()
        _value(r, m, depth)
        m = r.marker()
