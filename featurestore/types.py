"""Value types a feature (or entity key) can have, and their Arrow equivalents.

``Int64``, ``Float32``, ``Float64``, ``String``, ``Bool``, ``Bytes`` and ``Timestamp`` are scalar types;
``Array(T)`` is a list of a scalar type. Every type maps to one Arrow type; timestamps are UTC with
microsecond precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from featurestore.errors import DefinitionError
from featurestore.timestamps import TS


@dataclass(frozen=True)
class DataType:
    name: str

    def to_arrow(self) -> pa.DataType:
        return _SCALAR_ARROW[self.name]

    def __repr__(self) -> str:
        return self.name

    def to_spec(self) -> str:
        return self.name

    @property
    def family(self) -> str:
        """Types in one family can be cast to each other without loss of meaning (int32 -> int64)."""
        return _FAMILY[self.name]


@dataclass(frozen=True)
class Array(DataType):
    """A list of a scalar type, e.g. ``Array(Float32)``."""

    element: DataType = None  # type: ignore[assignment]

    def __init__(self, element: DataType):
        if not isinstance(element, DataType) or isinstance(element, Array):
            raise DefinitionError(f"Array takes a scalar type, got {element!r}")
        object.__setattr__(self, "name", f"Array({element.name})")
        object.__setattr__(self, "element", element)

    def to_arrow(self) -> pa.DataType:
        return pa.list_(self.element.to_arrow())

    @property
    def family(self) -> str:
        return f"list<{self.element.family}>"


Int32 = DataType("Int32")
Int64 = DataType("Int64")
Float32 = DataType("Float32")
Float64 = DataType("Float64")
String = DataType("String")
Bool = DataType("Bool")
Bytes = DataType("Bytes")
Timestamp = DataType("Timestamp")
UnixTimestamp = Timestamp

_SCALARS = {t.name: t for t in (Int32, Int64, Float32, Float64, String, Bool, Bytes, Timestamp)}

_SCALAR_ARROW = {
    "Int32": pa.int32(),
    "Int64": pa.int64(),
    "Float32": pa.float32(),
    "Float64": pa.float64(),
    "String": pa.string(),
    "Bool": pa.bool_(),
    "Bytes": pa.binary(),
    "Timestamp": TS,
}

_FAMILY = {
    "Int32": "integer",
    "Int64": "integer",
    "Float32": "float",
    "Float64": "float",
    "String": "string",
    "Bool": "bool",
    "Bytes": "bytes",
    "Timestamp": "timestamp",
}


def from_spec(spec: str) -> DataType:
    """Parse the name a type serialises to (``"Int64"``, ``"Array(String)"``)."""
    if spec in _SCALARS:
        return _SCALARS[spec]
    if spec.startswith("Array(") and spec.endswith(")"):
        return Array(from_spec(spec[6:-1]))
    raise DefinitionError(f"unknown type {spec!r}; known: {', '.join(_SCALARS)} and Array(T)")


def from_arrow(arrow_type: pa.DataType) -> DataType:
    """The product type for an Arrow type found in a source; raises for types it cannot hold."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return Int32 if t.bit_width <= 32 and pa.types.is_signed_integer(t) else Int64
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return Float32
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return Float64
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return String
    if pa.types.is_boolean(t):
        return Bool
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return Bytes
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return Timestamp
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return Array(from_arrow(t.value_type))
    raise DefinitionError(f"no feature type for Arrow type {arrow_type}")
