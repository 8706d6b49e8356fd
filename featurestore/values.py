"""Which input values each type accepts: one definition for pushes (SDK and REST), stream messages,
lookup keys and on-demand request data. Values are checked, never coerced from another kind:

- Int32/Int64: an integer in the type's range. ``true``/``false`` are not integers, ``1.0`` is not an
  integer, and text is never a number (``"1001"``, ``"١٠٠١"``, ``"1_001"``, ``" 1001 "`` are refused).
- Float32/Float64: a number (an integer or a float, never ``true``/``false`` or text). NaN and
  +/-infinity are refused; so is a finite value beyond Float32's range for a Float32 (it would round
  to infinity). Rows read from a batch source are not input in this sense: there NaN means missing and
  the online store holds null (``without_nan``).
- String: text. Bool: ``true``/``false`` (not 0/1, not text).
- Bytes: bytes, or base64 text (as JSON carries bytes, and as lookups answer them).
- Timestamp: ``featurestore.timestamps`` (ISO 8601 text or an integer of epoch milliseconds, in
  1678-01-01 <= t < 2262-01-01).
- Array(T): a list whose elements follow T's rule.

``null``/None is a missing value for any feature (join keys and event times must have a value: the
callers check that). A refused value is an ``InvalidInputError`` whose message starts with the
``what`` the caller gives (e.g. ``"push to 'live': column 'speed'"``).
"""

from __future__ import annotations

import base64
import binascii
import math
import numbers
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from featurestore import timestamps
from featurestore.errors import InvalidInputError
from featurestore.types import Array, DataType

_INT_RANGE = {"Int64": (-(2**63), 2**63 - 1), "Int32": (-(2**31), 2**31 - 1)}
# The smallest magnitude that rounds to infinity as a float32: the midpoint between the largest
# float32, (2 - 2**-23) * 2**127, and 2**128 (a tie rounds to the even mantissa, i.e. to infinity).
FLOAT32_OVERFLOW = 2.0**128 - 2.0**103
_DESCRIBE = {"integer": "an integer", "float": "a number", "string": "text", "bool": "true or false",
             "bytes": "bytes or base64 text", "timestamp": timestamps.ACCEPTED}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _refuse(what: str, dtype: DataType, got: str, hint: str = "") -> InvalidInputError:
    return InvalidInputError(f"{what} should be {dtype.name} ({_DESCRIBE[dtype.family]}), got {got}"
                             + (f" ({hint})" if hint else ""))


def _hint(family: str, kind: str) -> str:
    if kind == "string" and family in ("integer", "float"):
        return "text is never a number"
    if kind == "bool":
        return "true/false are not numbers" if family in ("integer", "float") else ""
    if kind == "float" and family == "integer":
        return "1.0 is not an integer"
    return ""


def _scalar_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, numbers.Integral):
        return "integer"
    if isinstance(value, numbers.Real):
        return "float"
    return type(value).__name__


# How ``check_one_kind`` names a value's kind (``_scalar_kind``'s names, integers and floats as one).
_KIND_NAMES = {"bool": "true/false", "integer": "number", "float": "number", "string": "str"}


def check_one_kind(what: str, values: list) -> None:
    """A column's values (None aside) are all of one kind: Arrow would otherwise turn ``[0.0, False]``
    into ``[0.0, 0.0]`` or fail on ``[1, "2"]`` before the rules above see the values."""
    kinds = {"datetime" if isinstance(v, datetime) else _KIND_NAMES.get(_scalar_kind(v), _scalar_kind(v))
             for v in values if v is not None}
    if len(kinds) > 1:
        raise InvalidInputError(f"{what} mixes {' and '.join(sorted(kinds))} values")


def check_float(value: float, dtype: DataType, what: str) -> float:
    """``value`` if finite (and, for Float32, within its range)."""
    if not math.isfinite(value):
        raise InvalidInputError(f"{what} has {value}: NaN and infinities are not accepted (send null for a "
                                f"missing value)")
    if dtype.name == "Float32" and abs(value) >= FLOAT32_OVERFLOW:
        raise InvalidInputError(f"{what} has {value!r}, beyond Float32's range (about +/-3.4028235e38)")
    return value


def scalar(value: Any, dtype: DataType, what: str) -> Any:
    """One non-null JSON/Python value checked against ``dtype`` (the module's rules), as the Python value
    it stands for (timestamps as aware UTC datetimes, Bytes as bytes)."""
    if isinstance(dtype, Array):
        if not isinstance(value, (list, tuple)):
            raise _refuse(what, dtype, _show(value))
        return [None if v is None else scalar(v, dtype.element, f"{what}[{i}]") for i, v in enumerate(value)]
    family, kind = dtype.family, _scalar_kind(value)
    if family == "timestamp":
        return timestamps.parse_instant(value, what)
    if family == "integer":
        if kind != "integer":
            raise _refuse(what, dtype, _show(value), _hint(family, kind))
        lo, hi = _INT_RANGE[dtype.name]
        if not lo <= value <= hi:
            raise InvalidInputError(f"{what} has {value}, out of range for {dtype.name}")
        return int(value)
    if family == "float":
        if kind not in ("integer", "float"):
            raise _refuse(what, dtype, _show(value), _hint(family, kind))
        try:
            number = float(value)
        except OverflowError:  # an integer too large for any float
            raise InvalidInputError(f"{what} has {_show(value)}, beyond {dtype.name}'s range") from None
        return check_float(number, dtype, what)
    if family == "string":
        if kind != "string":
            raise _refuse(what, dtype, _show(value))
        return value
    if family == "bool":
        if kind != "bool":
            raise _refuse(what, dtype, _show(value))
        return bool(value)
    if family == "bytes":
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if kind != "string":
            raise _refuse(what, dtype, _show(value))
        return _base64(value, what)
    raise InvalidInputError(f"{what}: unsupported type {dtype.name}")


def _base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"{what} is not valid base64: {_show(text)}") from None


# -- Arrow columns (pushes) ------------------------------------------------------------------------
def _arrow_kind(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytes"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "list"
    return str(t)


_ALLOWED = {"integer": {"integer"}, "float": {"integer", "float"}, "string": {"string"}, "bool": {"bool"},
            "bytes": {"bytes", "string"}}


def column(col: pa.Array | pa.ChunkedArray, dtype: DataType, what: str) -> pa.Array | pa.ChunkedArray:
    """An input column as ``dtype``'s Arrow type, every value checked by the module's rules (nulls stay
    null), or ``InvalidInputError`` naming ``what``."""
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.cast(t.value_type), t.value_type
    want = dtype.to_arrow()
    if pa.types.is_null(t):
        return col.cast(want)
    if dtype.family == "timestamp":
        return timestamps.instant_column(col, what)
    kind = _arrow_kind(t)
    if isinstance(dtype, Array):
        if kind != "list":
            raise _refuse(what, dtype, f"{t} values")
        if dtype.element.family in ("timestamp", "bytes"):  # elements that change form: one by one
            return pa.array([None if v is None else scalar(v, dtype, what) for v in col.to_pylist()], want)
        elements = pc.list_flatten(col)
        column(elements, dtype.element, f"{what} element")
        return col.cast(want)
    if kind not in _ALLOWED[dtype.family]:
        raise _refuse(what, dtype, f"{t} values", _hint(dtype.family, kind))
    if dtype.family == "bytes" and kind == "string":
        return pa.array([None if v is None else _base64(v, what) for v in col.to_pylist()], want)
    if dtype.family == "float":
        if kind == "integer":  # an integer is a number: the nearest float, as float(value) gives
            col = col.cast(pa.float64(), safe=False)
        _check_floats(col, dtype, what)
    try:
        return col.cast(want)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InvalidInputError(f"{what} should be {dtype.name}, got {t} values ({exc})") from None


def _check_floats(col: pa.Array | pa.ChunkedArray, dtype: DataType, what: str) -> None:
    """No NaN or infinity, and nothing beyond Float32's range for a Float32."""
    if not pa.types.is_floating(col.type) or len(col) == col.null_count:
        return
    values = col.cast(pa.float64())
    bad = pc.invert(pc.is_finite(values))
    if dtype.name == "Float32":
        bad = pc.or_(bad, pc.greater_equal(pc.abs(values), FLOAT32_OVERFLOW))
    if pc.any(bad).as_py():
        first = values.filter(bad)[0].as_py()
        check_float(first, dtype, what)


def without_nan(table: pa.Table) -> pa.Table:
    """``table`` with NaN and +/-infinity in its float columns (lists' elements too) as null: how rows
    read from a batch source, where NaN means missing, are stored online."""
    for i, f in enumerate(table.schema):
        col = table.column(i)
        if pa.types.is_floating(f.type):
            finite = pc.is_finite(col)
            if not pc.all(pc.fill_null(finite, True)).as_py():
                table = table.set_column(i, f, pc.if_else(finite, col, pa.scalar(None, f.type)))
        elif (pa.types.is_list(f.type) or pa.types.is_large_list(f.type)) and pa.types.is_floating(f.type.value_type):
            table = table.set_column(i, f, _list_without_nan(col))
    return table


def _list_without_nan(col: pa.ChunkedArray) -> pa.ChunkedArray:
    chunks = []
    for chunk in col.chunks:
        finite = pc.is_finite(chunk.values)
        if pc.all(pc.fill_null(finite, True)).as_py():
            chunks.append(chunk)
            continue
        values = pc.if_else(finite, chunk.values, pa.scalar(None, chunk.type.value_type))
        chunks.append(type(chunk).from_arrays(chunk.offsets, values, mask=chunk.is_null()))
    return pa.chunked_array(chunks, col.type)
