"""Binary encoding of online rows and entity keys, shared by the Redis and SQLite online stores.

Entity key (``encode_key``): the key tuple in join-key order, each part ``<tag><byte length>:<payload>``
with tag ``i`` (int, decimal ASCII), ``s`` (str, UTF-8) or ``b`` (bytes, raw); e.g. ``(1001, "us")`` is
``i4:1001s2:us``. Every part says its own length, so the encoding is unambiguous and needs no escaping.

Row (``encode_rows`` / ``RowDecoder``), one byte string per (view, entity)::

    0     u8      FORMAT (1)
    1     >i8     event timestamp, microseconds since the epoch (UTC)
    9     >i8     created timestamp in microseconds, or INT64_MIN when there is none
    17    >u2     S = length of the schema section
    19    S       schema: per feature  u8 type code, >u2 name length, UTF-8 name
    19+S  NB      null bitmap, NB = ceil(n_features / 8); bit i set = feature i is null
    ...   fixed   per feature, in schema order, little-endian: the value of a fixed-width scalar
                  (int64 q, int32 i, float32 f, float64 d, bool ?, timestamp q in microseconds)
                  or the u32 byte length of the blob of a variable-width feature
    ...   blobs   the blobs of the variable-width features, in schema order

Blobs: string = UTF-8, bytes = raw; list of a fixed-width type = u32 count, the packed values, then
(only when some element is null) one validity byte per element; list of string/bytes = u32 count, one
i32 length per element (-1 = null element), the concatenated payloads.

The timestamps lead the row, big-endian, so the Redis compare-and-set script reads them with
``struct.unpack('>i4I4i4I4', row, 2)`` without decoding the rest.

A stored row is *sound* (``row_problem`` returns None) when its header is whole with this FORMAT, its
event time (and created time, unless INT64_MIN) lies in the accepted range 1678-01-01 <= t < 2262-01-01
(``ROW_TS_MIN_US`` .. ``ROW_TS_END_US``), its schema lists known type codes, and its length is exactly
what the header, schema and blob lengths add up to. A row that is not sound (truncated, garbage, a
timestamp that overflows, e.g. written by an older version) decodes as *invalid*: ``ReadResult.invalid``
names it, its values are None, and both write paths treat it as absent, so any later write replaces
it (the Redis script mirrors ``row_problem``). A sound row one of whose requested values cannot be
decoded (a string that is not UTF-8, a list blob whose counts disagree) is reported invalid too; the
next write with a newer event time replaces it. The schema travels with every row:
rows written before a view gained or changed a feature still decode (a feature a row does not hold
reads as None), and nothing outside the row (which Redis might evict) is needed to read it.

Writing is column-wise: fixed-width parts are built as one numpy record array, variable-width parts
as Arrow binary arrays that share the source buffers, and ``binary_join_element_wise`` glues the
pieces into one byte string per row. Only long-stable pyarrow/numpy APIs are used (pyarrow >= 16).
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta
from functools import lru_cache
from operator import itemgetter
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore import types as fstypes
from featurestore.errors import DefinitionError, InvalidInputError
from featurestore.ports.online_store import EventTimes, ReadResult
from featurestore.timestamps import EPOCH, INPUT_END_US, INPUT_MIN_US, column_us, from_us

FORMAT = 1
INT64_MIN = -(2**63)

HEADER = struct.Struct(">BqqH")  # format, event_ts, created_ts, schema length
HEADER_SIZE = HEADER.size  # 19

# type codes
NULL, INT64, INT32, FLOAT32, FLOAT64, BOOL, STRING, BYTES, TIMESTAMP = range(9)
LIST = 0x10  # LIST | element code

_FIXED_CHAR = {INT64: "q", INT32: "i", FLOAT32: "f", FLOAT64: "d", BOOL: "?", TIMESTAMP: "q"}
_FIXED_NP = {INT64: "<i8", INT32: "<i4", FLOAT32: "<f4", FLOAT64: "<f8", BOOL: "u1", TIMESTAMP: "<i8"}
_VAR_SCALARS = (STRING, BYTES)
_CODE_OF_TYPE = {"Int64": INT64, "Int32": INT32, "Float32": FLOAT32, "Float64": FLOAT64, "Bool": BOOL,
                 "String": STRING, "Bytes": BYTES, "Timestamp": TIMESTAMP}
# Codes in one family decode for each other (a view whose Int32 feature became Int64 still reads).
_FAMILY = {INT64: 1, INT32: 1, FLOAT32: 2, FLOAT64: 2, BOOL: 3, STRING: 4, BYTES: 5, TIMESTAMP: 6}
_LARGE_EMPTY = pa.scalar(b"", pa.large_binary())
# Bytes a feature takes in a row's fixed section; -1: a variable-width feature (a u32 blob length there)
FIXED_SECTION_WIDTH = {NULL: 0, INT64: 8, INT32: 4, FLOAT32: 4, FLOAT64: 8, BOOL: 1, TIMESTAMP: 8,
                       STRING: -1, BYTES: -1, **{LIST | c: -1 for c in (INT64, INT32, FLOAT32, FLOAT64, BOOL,
                                                                         STRING, BYTES, TIMESTAMP)}}
# The accepted time range (the input rule of featurestore.timestamps): a stored row's event and created
# times outside it make the row invalid (every output, pandas' datetime64[ns] included, can carry it).
ROW_TS_MIN_US, ROW_TS_END_US = INPUT_MIN_US, INPUT_END_US  # the end is exclusive


# --------------------------------------------------------------------------------------- types
@lru_cache(maxsize=1024)
def type_code(arrow_type: pa.DataType) -> int:
    """The row type code of an Arrow type (after mapping it to a product type)."""
    if pa.types.is_null(arrow_type):
        return NULL
    try:
        product = fstypes.from_arrow(arrow_type)
    except DefinitionError as exc:
        raise InvalidInputError(str(exc)) from None
    if isinstance(product, fstypes.Array):
        return LIST | _CODE_OF_TYPE[product.element.name]
    return _CODE_OF_TYPE[product.name]


def _code_arrow(code: int) -> pa.DataType:
    names = {v: k for k, v in _CODE_OF_TYPE.items()}
    if code & LIST:
        return pa.list_(fstypes.from_spec(names[code & ~LIST]).to_arrow())
    return fstypes.from_spec(names[code]).to_arrow()


def _compatible(stored: int, wanted: int) -> bool:
    if stored == wanted:
        return True
    if (stored & LIST) != (wanted & LIST) or stored == NULL or wanted == NULL:
        return False
    return _FAMILY[stored & ~LIST] == _FAMILY[wanted & ~LIST]


# ----------------------------------------------------------------------------------- entity keys
def _key_part(value: Any) -> bytes:
    if type(value) is int:  # the common case, first
        payload = b"%d" % value
        return b"i%d:%s" % (len(payload), payload)
    if isinstance(value, bool) or value is None:
        raise InvalidInputError(f"entity key values are int, str or bytes, got {value!r}")
    if isinstance(value, int):
        payload = b"%d" % value
        tag = b"i"
    elif isinstance(value, str):
        payload = value.encode("utf-8")
        tag = b"s"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        payload = bytes(value)
        tag = b"b"
    elif isinstance(value, np.integer):
        payload = b"%d" % int(value)
        tag = b"i"
    else:
        raise InvalidInputError(f"entity key values are int, str or bytes, got {type(value).__name__}")
    return b"%s%d:%s" % (tag, len(payload), payload)


encode_key_part = _key_part  # a key of one join key: encode_key((v,)) == encode_key_part(v)


def encode_key(key: tuple | list) -> bytes:
    """The unambiguous byte encoding of one key tuple (see the module docstring)."""
    if len(key) == 1:
        return _key_part(key[0])
    return b"".join([_key_part(v) for v in key])


def encode_key_column(table: pa.Table, join_keys: list[str]) -> pa.Array:
    """``encode_key`` of every row of ``table``, vectorised: a large_binary array."""
    pieces: list[Any] = []
    for name in join_keys:
        if name not in table.column_names:
            raise InvalidInputError(f"join key column {name!r} is missing from the rows")
        col = _combined(table.column(name))
        if col.null_count:
            raise InvalidInputError(f"join key column {name!r} has null values")
        t = col.type
        if pa.types.is_dictionary(t):
            col = col.cast(t.value_type)
            t = col.type
        if pa.types.is_integer(t):
            payload, tag = col.cast(pa.int64()).cast(pa.string()).cast(pa.large_binary()), b"i"
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            payload, tag = col.cast(pa.large_binary()), b"s"
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            payload, tag = col.cast(pa.large_binary()), b"b"
        else:
            raise InvalidInputError(f"join key column {name!r} has type {t}; keys are int, str or bytes")
        length = pc.binary_length(payload).cast(pa.string()).cast(pa.large_binary())
        pieces += [pa.scalar(tag, pa.large_binary()), length, pa.scalar(b":", pa.large_binary()), payload]
    if len(pieces) == 0:
        raise InvalidInputError("a view needs at least one join key")
    return pc.binary_join_element_wise(*pieces, _LARGE_EMPTY)


# ---------------------------------------------------------------------------------- timestamps
def timestamps_us(column: pa.Array | pa.ChunkedArray, *, name: str, nullable: bool) -> np.ndarray:
    """A timestamp column as int64 microseconds since the epoch (nulls -> INT64_MIN if allowed)."""
    col = _combined(column)
    t = col.type
    if not (pa.types.is_date(t) or pa.types.is_timestamp(t)):
        raise InvalidInputError(f"column {name!r} must be a timestamp, got {t}")
    col = column_us(col).cast(pa.int64())  # naive = UTC, nanoseconds floored (featurestore.timestamps)
    if col.null_count:
        if not nullable:
            raise InvalidInputError(f"timestamp column {name!r} has null values")
        col = col.fill_null(INT64_MIN)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.int64)


def us_to_datetime(us: int) -> datetime:
    return from_us(us)


# ------------------------------------------------------------------------------------- encoding
def _combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 1:
            return column.chunk(0)
        if column.num_chunks == 0:
            return pa.array([], type=column.type)
        return column.combine_chunks()
    return column


def _binary_from(offsets: np.ndarray, data: pa.Buffer) -> pa.Array:
    """A large_binary array over ``data`` whose row i is data[offsets[i]:offsets[i+1]] (no copy)."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    return pa.Array.from_buffers(pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), data])


def _numpy_values(arr: pa.Array, code: int) -> np.ndarray:
    """Values of a non-list fixed-width array as numpy (nulls as zero), in its little-endian layout."""
    if code == TIMESTAMP:
        arr = column_us(arr).cast(pa.int64())
    elif code == BOOL:
        arr = arr.cast(pa.uint8())
    else:
        arr = arr.cast(_code_arrow(code))
    if arr.null_count:
        arr = arr.fill_null(0)
    return np.asarray(arr.to_numpy(zero_copy_only=False)).astype(_FIXED_NP[code], copy=False)


def _valid_mask(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _var_blob(arr: pa.Array, code: int) -> tuple[list[pa.Array], np.ndarray]:
    """Pieces (binary arrays) whose row-wise concatenation is each row's blob, and the blob lengths."""
    n = len(arr)
    if code in _VAR_SCALARS:
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        b = arr.cast(pa.large_binary())
        if b.null_count:
            b = b.fill_null(b"")
        lengths = np.asarray(pc.binary_length(b).to_numpy(zero_copy_only=False), dtype=np.int64)
        return [b], lengths
    elem = code & ~LIST
    arr = arr.cast(_code_arrow(code)) if elem != TIMESTAMP else arr
    counts = pc.list_value_length(arr)
    counts = np.asarray((counts.fill_null(0) if counts.null_count else counts).to_numpy(
        zero_copy_only=False), dtype=np.int64)
    elem_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=elem_off[1:])
    flat = pc.list_flatten(arr)
    count_piece = _binary_from(np.arange(n + 1, dtype=np.int64) * 4,
                               pa.py_buffer(counts.astype("<u4").tobytes()))
    if elem in _VAR_SCALARS:
        fb = flat.cast(pa.large_binary())
        flens = pc.binary_length(fb)
        flens = np.asarray((flens.fill_null(-1) if flens.null_count else flens).to_numpy(
            zero_copy_only=False), dtype="<i4")
        len_piece = _binary_from(elem_off * 4, pa.py_buffer(flens.tobytes()))
        if fb.null_count:
            fb = fb.fill_null(b"")
        # Absolute offsets of fb's values in its data buffer, then the byte range of each row's list.
        str_off = np.frombuffer(fb.buffers()[1], dtype=np.int64, count=fb.offset + len(fb) + 1)[fb.offset:]
        data_buf = fb.buffers()[2] or pa.py_buffer(b"")
        data_piece = _binary_from(str_off[elem_off], data_buf)
        lengths = 4 + 4 * counts + (str_off[elem_off[1:]] - str_off[elem_off[:-1]])
        return [count_piece, len_piece, data_piece], lengths
    size = np.dtype(_FIXED_NP[elem]).itemsize
    values = _numpy_values(flat, elem)
    pieces = [count_piece, _binary_from(elem_off * size, pa.py_buffer(values.tobytes()))]
    lengths = 4 + counts * size
    if flat.null_count:
        valid = _valid_mask(flat).astype(np.uint8)
        pieces.append(_binary_from(elem_off, pa.py_buffer(valid.tobytes())))
        lengths = lengths + counts
    return pieces, lengths


def schema_bytes(features: list[tuple[str, int]]) -> bytes:
    parts = []
    for name, code in features:
        raw = name.encode("utf-8")
        parts.append(struct.pack(">BH", code, len(raw)) + raw)
    return b"".join(parts)


def encode_rows(columns: list[tuple[str, pa.Array | pa.ChunkedArray]], event_us: np.ndarray,
                created_us: np.ndarray) -> pa.Array:
    """Encode rows column-wise: ``columns`` are (feature name, values); returns a large_binary array."""
    n = len(event_us)
    feats: list[tuple[str, int, pa.Array]] = []
    for name, col in columns:
        arr = _combined(col)
        if len(arr) != n:
            raise InvalidInputError(f"column {name!r} has {len(arr)} rows, expected {n}")
        feats.append((name, type_code(arr.type), arr))
    schema = schema_bytes([(name, code) for name, code, _ in feats])
    nb = (len(feats) + 7) // 8
    fields: list[tuple[str, str]] = [("fmt", "u1"), ("ev", ">i8"), ("cr", ">i8"), ("slen", ">u2")]
    if schema:
        fields.append(("schema", f"V{len(schema)}"))
    fields += [(f"nb{j}", "u1") for j in range(nb)]
    var_pieces: list[pa.Array] = []
    fixed_values: list[tuple[str, np.ndarray]] = []
    bitmap = np.zeros((nb, n), dtype=np.uint8)
    for i, (_name, code, arr) in enumerate(feats):
        field = f"f{i}"
        if code == NULL:
            bitmap[i // 8] |= np.uint8(1 << (i % 8))
            continue
        if arr.null_count:
            bitmap[i // 8] |= (~_valid_mask(arr)).astype(np.uint8) << np.uint8(i % 8)
        if code in _FIXED_NP:
            fields.append((field, _FIXED_NP[code]))
            fixed_values.append((field, _numpy_values(arr, code)))
        else:
            pieces, lengths = _var_blob(arr, code)
            fields.append((field, "<u4"))
            fixed_values.append((field, lengths))
            var_pieces += pieces
    rec = np.zeros(n, dtype=np.dtype(fields))
    rec["fmt"] = FORMAT
    rec["ev"] = event_us
    rec["cr"] = created_us
    rec["slen"] = len(schema)
    if schema:
        rec["schema"] = np.void(schema)
    for j in range(nb):
        rec[f"nb{j}"] = bitmap[j]
    for field, values in fixed_values:
        rec[field] = values
    size = rec.dtype.itemsize
    base = _binary_from(np.arange(n + 1, dtype=np.int64) * size, pa.py_buffer(rec.view(np.uint8)))  # no copy
    if not var_pieces:
        return base
    return pc.binary_join_element_wise(base, *var_pieces, _LARGE_EMPTY)


# ------------------------------------------------------------------------------------- decoding
@lru_cache(maxsize=4096)
def _struct(fmt: str) -> struct.Struct:
    return struct.Struct(fmt)


def _list_fixed(char: str, size: int, convert: Callable | None) -> Callable[[bytes], list]:
    def decode(blob: bytes) -> list:
        (count,) = _U32.unpack_from(blob, 0)
        packed = 4 + count * size
        if len(blob) != packed and len(blob) != packed + count:
            raise ValueError(f"a list blob of {len(blob)} bytes holds {count} values of {size} bytes")
        values = list(_struct(f"<{count}{char}").unpack_from(blob, 4))
        if convert is not None:
            values = [convert(v) for v in values]
        if len(blob) > packed:
            valid = blob[packed:]
            values = [v if ok else None for v, ok in zip(values, valid)]
        return values

    return decode


def _list_var(is_str: bool) -> Callable[[bytes], list]:
    def decode(blob: bytes) -> list:
        (count,) = _U32.unpack_from(blob, 0)
        lengths = _struct(f"<{count}i").unpack_from(blob, 4)
        pos = 4 + 4 * count
        out: list = []
        for length in lengths:
            if length < 0:
                out.append(None)
                continue
            chunk = blob[pos:pos + length]
            out.append(chunk.decode("utf-8") if is_str else chunk)
            pos += length
        if pos != len(blob):
            raise ValueError(f"a list blob of {len(blob)} bytes whose element lengths add up to {pos}")
        return out

    return decode


_U32 = struct.Struct("<I")
_FIXED_NP_OF_CHAR = {"q": "<i8", "i": "<i4", "f": "<f4", "d": "<f8", "?": "?"}
_COLUMNAR_MIN_ROWS = 8  # from this many rows on, decoding them as one numpy array is cheaper


def _converter(code: int) -> Callable | None:
    if code == TIMESTAMP:
        return us_to_datetime
    if code == STRING:
        return bytes.decode  # UTF-8
    if code & LIST:
        elem = code & ~LIST
        if elem in _VAR_SCALARS:
            return _list_var(elem == STRING)
        return _list_fixed(_FIXED_CHAR[elem], struct.calcsize("<" + _FIXED_CHAR[elem]),
                           us_to_datetime if elem == TIMESTAMP else None)
    return None


class _Layout:
    """Where the requested features sit in rows written with one schema, and how to convert them."""

    __slots__ = ("fixed", "nb", "zero_bitmap", "var_slots", "null_slots", "getter", "converts", "slots",
                 "missing", "dtype", "fields")

    def __init__(self, schema: bytes, wanted: tuple[tuple[str, int], ...]):
        feats = _schema_features(schema)
        self.nb = (len(feats) + 7) // 8
        self.zero_bitmap = bytes(self.nb)
        fmt = "<"
        slot_of: dict[str, tuple[int, int]] = {}
        var_slots: list[int] = []
        null_slots: list[tuple[int, int, int]] = []  # (bitmap byte, bit mask, value slot)
        slot = 0
        for i, (name, code) in enumerate(feats):
            if code not in FIXED_SECTION_WIDTH:
                raise ValueError(f"unknown type code {code} of feature {name!r}")
            if code == NULL:
                slot_of[name] = (code, -1)
                continue
            if code in _FIXED_CHAR:
                fmt += _FIXED_CHAR[code]
            else:
                fmt += "I"
                var_slots.append(slot)
            slot_of[name] = (code, slot)
            null_slots.append((i >> 3, 1 << (i & 7), slot))
            slot += 1
        self.fixed = _struct(fmt)
        # numpy type of a whole row, for decoding many rows at once (fixed-width features only)
        self.dtype = None if var_slots else _record_dtype(schema, self.nb, fmt[1:])
        self.var_slots = var_slots
        self.null_slots = null_slots
        # The decoded values list gets one extra None at index ``slot`` for features the row lacks.
        missing = slot
        slots, converts = [], []
        for j, (name, want) in enumerate(wanted):
            code, at = slot_of.get(name, (NULL, -1))
            if at < 0 or not _compatible(code, want):
                slots.append(missing)
                continue
            slots.append(at)
            convert = _converter(code)
            if convert is not None:
                converts.append((j, convert))
        self.slots, self.missing = slots, missing
        self.fields = [(slot, f"s{slot}") for slot in sorted(set(slots)) if slot != missing]  # record fields read
        self.getter = _picker(slots)
        self.converts = converts


def _schema_features(schema: bytes) -> list[tuple[str, int]]:
    """(name, type code) of each feature in a row's schema section (``struct.error`` if it is cut short;
    a name that is not UTF-8 matches no requested feature)."""
    feats: list[tuple[str, int]] = []
    pos = 0
    while pos < len(schema):
        code, length = struct.unpack_from(">BH", schema, pos)
        pos += 3
        if pos + length > len(schema):
            raise struct.error(f"a feature name of {length} bytes runs past the {len(schema)}-byte schema")
        feats.append((schema[pos:pos + length].decode("utf-8", "surrogateescape"), code))
        pos += length
    return feats


# ----------------------------------------------------------------------------------- soundness
_ROW_ERRORS = (struct.error, ValueError, OverflowError, IndexError, KeyError, TypeError)


def _timestamp_problem(event_us: int, created_us: int) -> str | None:
    if not ROW_TS_MIN_US <= event_us < ROW_TS_END_US:
        return f"its event time, {_shown_us(event_us)}, is outside the accepted range 1678-01-01 .. 2262-01-01"
    if created_us != INT64_MIN and not ROW_TS_MIN_US <= created_us < ROW_TS_END_US:
        return f"its created time, {_shown_us(created_us)}, is outside the accepted range 1678-01-01 .. 2262-01-01"
    return None


def _shown_us(us: int) -> str:
    try:
        return from_us(us).isoformat()
    except OverflowError:
        return f"{us} microseconds since the epoch"


@lru_cache(maxsize=256)
def _schema_sizes(schema: bytes) -> tuple[int, tuple[int, ...]] | str:
    """For rows written with ``schema``: the bytes after it up to the blobs (null bitmap and fixed
    section) and where in them each blob length sits; or why the schema is unreadable."""
    size, count, var_at, pos = 0, 0, [], 0
    while pos < len(schema):
        if pos + 3 > len(schema):
            return f"its {len(schema)}-byte schema section is cut short"
        code, length = struct.unpack_from(">BH", schema, pos)
        pos += 3 + length
        if pos > len(schema):
            return f"its {len(schema)}-byte schema section is cut short"
        width = FIXED_SECTION_WIDTH.get(code)
        if width is None:
            return f"its schema holds the unknown type code {code}"
        count += 1
        if width < 0:
            var_at.append(size)
            width = 4
        size += width
    nb = (count + 7) // 8
    return nb + size, tuple(nb + at for at in var_at)


def row_problem(row: Any) -> str | None:
    """Why a stored row is not sound (see the module docstring), or None when it is. The write paths
    treat a row that is not sound as absent; the Redis upsert script checks the same, in the same
    order (``connectors.online_redis``)."""
    if not isinstance(row, (bytes, bytearray, memoryview)):
        return f"the stored value is {type(row).__name__}, not bytes"
    n = len(row)
    if n < HEADER_SIZE:
        return f"the row is {n} bytes, shorter than its {HEADER_SIZE}-byte header"
    fmt, event_us, created_us, slen = HEADER.unpack_from(row, 0)
    if fmt != FORMAT:
        return f"its format byte is {fmt}, not {FORMAT}"
    problem = _timestamp_problem(event_us, created_us)
    if problem is not None:
        return problem
    if HEADER_SIZE + slen > n:
        return f"the row is {n} bytes, cut inside its {slen}-byte schema section"
    sizes = _schema_sizes(bytes(row[HEADER_SIZE:HEADER_SIZE + slen]))
    if isinstance(sizes, str):
        return sizes
    fixed, var_at = sizes
    start = HEADER_SIZE + slen
    need = start + fixed
    if need > n:
        return f"the row is {n} bytes, cut before the end of its fixed section ({need} bytes)"
    need += sum(_U32.unpack_from(row, start + at)[0] for at in var_at)
    if need != n:
        return f"the row is {n} bytes, its layout needs {need}"
    return None


def row_sound(row: Any, event_us: int, created_us: int) -> bool:
    """``row_problem(row) is None``, and the row's timestamps are ``event_us`` and ``created_us`` (kept
    beside it by a store): the same checks, fast, for write paths that test every stored row."""
    try:
        fmt, ev, cr, slen = HEADER.unpack_from(row, 0)
    except (struct.error, TypeError):
        return False
    if (fmt != FORMAT or ev != event_us or cr != created_us or not ROW_TS_MIN_US <= ev < ROW_TS_END_US
            or (cr != INT64_MIN and not ROW_TS_MIN_US <= cr < ROW_TS_END_US)):
        return False
    start = HEADER_SIZE + slen
    n = len(row)
    if start > n:
        return False
    schema = row[HEADER_SIZE:start]
    sizes = _schema_sizes(schema if schema.__class__ is bytes else bytes(schema))
    if sizes.__class__ is str:
        return False
    fixed, var_at = sizes
    need = start + fixed
    if need > n:
        return False
    for at in var_at:
        need += _U32.unpack_from(row, start + at)[0]
    return need == n


def invalid_reason(row: Any, exc: Exception | None = None) -> str:
    """Why ``row`` could not be decoded: ``row_problem``, or else the error one of its values gave."""
    problem = row_problem(row)
    if problem is not None:
        return problem
    return f"a stored value cannot be decoded ({type(exc).__name__}: {exc})" if exc else "it cannot be decoded"


def _record_dtype(schema: bytes, nb: int, chars: str) -> np.dtype:
    """The numpy record type of a whole row whose features are all fixed-width (``chars``: their
    struct format characters, in schema order)."""
    fields = [("fmt", "u1"), ("ev", ">i8"), ("cr", ">i8"), ("slen", ">u2")]
    if schema:
        fields.append(("schema", f"V{len(schema)}"))
    fields += [(f"nb{j}", "u1") for j in range(nb)]
    fields += [(f"s{j}", _FIXED_NP_OF_CHAR[c]) for j, c in enumerate(chars)]
    return np.dtype(fields)


def _picker(slots: list[int]) -> Callable:
    """A function from a row's decoded values to the requested ones, in request order."""
    if len(slots) == 1:
        only = slots[0]
        return lambda values: [values[only]]
    if slots:
        return itemgetter(*slots)
    return lambda values: ()


def _new_layout(layouts: dict[bytes, _Layout], schema: bytes, wanted: tuple) -> _Layout:
    """The layout of rows written with ``schema``, added to ``layouts`` (cleared first when it holds
    many: the cache stays bounded)."""
    if len(layouts) > 256:
        layouts.clear()
    layout = layouts[schema] = _Layout(schema, wanted)
    return layout


class RowDecoder:
    """Decodes stored rows into per-feature Python values; layouts are cached per (request, schema)."""

    def __init__(self) -> None:
        self._layouts: dict[tuple, dict[bytes, _Layout]] = {}  # request -> row schema -> layout

    def decode(self, rows: list[bytes | None], features: list[str],
               feature_types: dict[str, pa.DataType]) -> ReadResult:
        """``rows`` (None: no row for that key) as an online store's ``ReadResult``, with its
        ``complete`` hint when known. A row that cannot be decoded never raises: it reads as absent and
        ``ReadResult.invalid`` gives its index and why (``invalid_reason``)."""
        try:
            wanted = tuple((f, type_code(feature_types[f])) for f in features)
        except KeyError as exc:
            raise InvalidInputError(f"no type given for feature {exc.args[0]!r}") from None
        layouts = self._layouts.get(wanted)  # row schema -> layout, for this request
        if layouts is None:
            layouts = self._new_layout_cache(wanted)
        if len(rows) >= _COLUMNAR_MIN_ROWS and wanted:
            try:
                decoded = self._decode_columnar(rows, features, wanted, layouts)
            except _ROW_ERRORS:  # some row is not what its header says: row by row tells which
                decoded = None
            if decoded is not None:
                return decoded
        return self._decode_rows(rows, features, wanted, layouts)

    def _new_layout_cache(self, wanted: tuple) -> dict[bytes, _Layout]:
        """An empty layout cache for a request not seen before (all are dropped when there are many)."""
        if len(self._layouts) > 256:
            self._layouts.clear()
        layouts = self._layouts[wanted] = {}
        return layouts

    def _decode_rows(self, rows: list[bytes | None], features: list[str], wanted: tuple,
                     layouts: dict[bytes, _Layout]) -> ReadResult:
        """``decode`` row by row (any mix of schemas and feature kinds)."""
        out_rows: list = []
        stamps: list[datetime | None] = []
        invalid: dict[int, str] = {}
        empty = (None,) * len(wanted)
        unpack_header = HEADER.unpack_from
        lo, end = ROW_TS_MIN_US, ROW_TS_END_US
        for i, row in enumerate(rows):
            if row is None:
                out_rows.append(empty)
                stamps.append(None)
                continue
            try:
                fmt, ev, cr, slen = unpack_header(row, 0)
                if fmt != FORMAT or not lo <= ev < end or not (cr == INT64_MIN or lo <= cr < end):
                    raise ValueError("the row's header is not sound")
                pos = HEADER_SIZE + slen
                schema = row[HEADER_SIZE:pos]
                layout = layouts.get(schema)
                if layout is None:
                    layout = _new_layout(layouts, schema, wanted)
                bitmap = row[pos:pos + layout.nb]
                pos += layout.nb
                values = list(layout.fixed.unpack_from(row, pos))
                pos += layout.fixed.size
                for slot in layout.var_slots:
                    length = values[slot]
                    values[slot] = row[pos:pos + length]
                    pos += length
                if pos != len(row):
                    raise ValueError("the row's length is not what its layout needs")
                values.append(None)
                if bitmap != layout.zero_bitmap:
                    for byte, mask, slot in layout.null_slots:
                        if bitmap[byte] & mask:
                            values[slot] = None
                picked = layout.getter(values)
                if layout.converts:
                    picked = list(picked)
                    for j, convert in layout.converts:
                        value = picked[j]
                        if value is not None:
                            picked[j] = convert(value)
            except _ROW_ERRORS as exc:
                invalid[i] = invalid_reason(row, exc)
                out_rows.append(empty)
                stamps.append(None)
                continue
            out_rows.append(picked)
            stamps.append(EPOCH + timedelta(microseconds=ev))
        if not wanted:
            return ReadResult({}, stamps, invalid=invalid)
        if not out_rows:
            return ReadResult({f: [] for f in features}, stamps)
        return ReadResult({f: list(col) for f, col in zip(features, zip(*out_rows))}, stamps, invalid=invalid)

    def _decode_columnar(self, rows: list, features: list[str], wanted: tuple,
                         layouts: dict[bytes, _Layout]) -> ReadResult | None:
        """``decode`` of rows that all share one schema of fixed-width features (the usual case: one
        view, written by one definition), as one numpy record array; None for anything else."""
        found = _records_of_one_schema(rows, wanted, layouts)
        if found is None:
            return None
        layout, rec, present = found
        event_us = rec["ev"].astype(np.int64)
        if not _times_in_range(event_us, rec["cr"]):
            return None  # row by row names the rows
        columns, nulls = _record_columns(layout, rec)
        n_present = len(rec)
        outs = [columns[slot] if slot != layout.missing else [None] * n_present for slot in layout.slots]
        for j, convert in layout.converts:
            outs[j] = [None if v is None else convert(v) for v in outs[j]]
        n = len(rows)
        if n_present != n:
            outs, stamps = _scatter(outs, event_us, present, n)
        else:
            stamps = EventTimes(event_us)
        values = {}
        for f, col in zip(features, outs):
            values[f] = col if f not in values else list(col)
        complete = frozenset() if n_present != n else frozenset(
            f for f, slot in zip(features, layout.slots) if slot != layout.missing and slot not in nulls)
        return ReadResult(values, stamps, complete)


def _times_in_range(event_us: np.ndarray, created_us: np.ndarray) -> bool:
    """Whether every event time, and every created time but INT64_MIN (none), is in the accepted range."""
    if event_us.min() < ROW_TS_MIN_US or event_us.max() >= ROW_TS_END_US:
        return False
    created = created_us.astype(np.int64)
    newest = created.max()
    if newest >= ROW_TS_END_US:
        return False
    if newest == INT64_MIN or created.min() >= ROW_TS_MIN_US:  # no created times, or all in range
        return True
    return not ((created < ROW_TS_MIN_US) & (created != INT64_MIN)).any()


def _records_of_one_schema(rows: list, wanted: tuple,
                           layouts: dict[bytes, _Layout]) -> tuple[_Layout, np.ndarray, Sequence[int]] | None:
    """The rows that are not None as one numpy record array, with their layout and their indexes in
    ``rows``, when they all have the first one's schema and it has fixed-width features only; else None."""
    all_present = None not in rows
    present = range(len(rows)) if all_present else [i for i, row in enumerate(rows) if row is not None]
    if not present:
        return None
    first = rows[present[0]]
    if len(first) < HEADER_SIZE or first[0] != FORMAT:
        return None
    slen = int.from_bytes(first[17:19], "big")
    schema = first[HEADER_SIZE:HEADER_SIZE + slen]
    layout = layouts.get(schema)
    if layout is None:
        layout = _new_layout(layouts, schema, wanted)  # an unreadable schema raises: row by row
    dtype = layout.dtype
    size = len(first)
    if dtype is None or size != dtype.itemsize:
        return None
    picked = rows if all_present else [rows[i] for i in present]
    if set(map(len, picked)) != {size}:
        return None
    joined = b"".join(picked)
    # Every row starts with FORMAT and carries the first row's schema length and schema (bytes 17 to
    # 19 + slen): compared as one 2-D byte array, not row by row.
    raw = np.frombuffer(joined, dtype=np.uint8).reshape(len(picked), size)
    head = raw[:, 17:HEADER_SIZE + slen]
    if not ((raw[:, 0] == FORMAT).all() and (head == head[0]).all()):
        return None  # some row has another schema: row by row
    return layout, np.frombuffer(joined, dtype=dtype), present


def _record_columns(layout: _Layout, rec: np.ndarray) -> tuple[dict[int, list], set[int]]:
    """The values of each slot the request reads (slot -> list, None where the row's null bitmap says
    so), and the slots with a null value somewhere."""
    columns = {slot: rec[name].tolist() for slot, name in layout.fields}
    nulls: set[int] = set()
    for j in range(layout.nb):
        bits = rec[f"nb{j}"]
        if bits.any():
            for byte, mask, slot in layout.null_slots:
                if byte == j and slot in columns:
                    for k in np.flatnonzero(bits & mask).tolist():
                        columns[slot][k] = None
                        nulls.add(slot)
    return columns, nulls


def _scatter(outs: list[list], event_us: np.ndarray, present: Sequence[int],
             n: int) -> tuple[list[list], EventTimes]:
    """The columns and event times of the rows at indexes ``present``, put in place among ``n`` rows:
    the absent keys get None."""
    def spread(values: list) -> list:
        out = [None] * n
        for i, v in zip(present, values):
            out[i] = v
        return out

    mask = np.zeros(n, dtype=bool)
    mask[present] = True
    full = np.zeros(n, dtype=np.int64)
    full[mask] = event_us
    return [spread(col) for col in outs], EventTimes(full, mask)


def row_timestamps(row: bytes) -> tuple[int, int]:
    """(event_us, created_us) of an encoded row."""
    _, ev, cr, _ = HEADER.unpack_from(row, 0)
    return ev, cr


# ------------------------------------------------------------------------------ write batches
def _check_row_times(us: np.ndarray, name: str) -> None:
    """Refuse times a stored row may not hold (it would read as invalid), naming the column."""
    if len(us) and (us.min() < ROW_TS_MIN_US or us.max() >= ROW_TS_END_US):
        bad = int(us[(us < ROW_TS_MIN_US) | (us >= ROW_TS_END_US)][0])
        raise InvalidInputError(f"column {name!r} has {_shown_us(bad)}, outside the accepted time range "
                                "1678-01-01T00:00:00Z <= t < 2262-01-01T00:00:00Z")


class WriteBatch:
    """One ``write`` call's rows, validated, reduced to the newest row per entity key, and encoded.

    ``keys`` are the encoded entity keys (``encode_key``), ``rows`` the encoded rows, ``event_us`` and
    ``created_us`` their timestamps; ``dropped`` counts input rows that lost to a newer row (or to an
    earlier row with equal timestamps) of the same key in this batch.
    """

    __slots__ = ("keys", "event_us", "created_us", "_columns", "dropped")

    def __init__(self, table: pa.Table, join_keys: list[str], event_ts_column: str,
                 created_ts_column: str | None) -> None:
        if event_ts_column not in table.column_names:
            raise InvalidInputError(f"event timestamp column {event_ts_column!r} is missing from the rows")
        if len(set(join_keys)) != len(join_keys) or not join_keys:
            raise InvalidInputError(f"join keys must be distinct and non-empty, got {join_keys!r}")
        n = table.num_rows
        keys = encode_key_column(table, join_keys)
        event_us = timestamps_us(table.column(event_ts_column), name=event_ts_column, nullable=False)
        _check_row_times(event_us, event_ts_column)
        if created_ts_column and created_ts_column in table.column_names:
            created_us = timestamps_us(table.column(created_ts_column), name=created_ts_column, nullable=True)
            _check_row_times(created_us[created_us != INT64_MIN], created_ts_column)
        else:
            created_us = np.full(n, INT64_MIN, dtype=np.int64)
        skip = set(join_keys) | {event_ts_column} | ({created_ts_column} if created_ts_column else set())
        columns = [(name, table.column(name)) for name in table.column_names if name not in skip]
        self.dropped = 0
        # One join key: its own column has as many distinct values as the encoded keys (the encoding
        # is one-to-one per type), and counting ints is cheaper than counting the encoded bytes.
        distinct_of = keys
        if len(join_keys) == 1:
            t = table.schema.field(join_keys[0]).type
            if pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
                distinct_of = table.column(join_keys[0])
        if n > 1 and pc.count_distinct(distinct_of).as_py() != n:
            codes = np.asarray(pc.dictionary_encode(keys).indices.to_numpy(zero_copy_only=False))
            # Per key: newest (event, created) first; on a full tie the earliest row in the batch.
            order = np.lexsort((np.arange(n), ~created_us, ~event_us, codes))
            first = np.ones(n, dtype=bool)
            first[1:] = codes[order[1:]] != codes[order[:-1]]
            keep = np.sort(order[first])
            self.dropped = n - len(keep)
            take = pa.array(keep)
            keys = keys.take(take)
            event_us, created_us = event_us[keep], created_us[keep]
            columns = [(name, col.take(take)) for name, col in columns]
        self.keys = keys
        self.event_us = event_us
        self.created_us = created_us
        self._columns = columns

    def __len__(self) -> int:
        return len(self.event_us)

    def select(self, mask: np.ndarray) -> None:
        """Keep only the rows where ``mask`` is true."""
        take = pa.array(np.flatnonzero(mask))
        self.keys = self.keys.take(take)
        self.event_us, self.created_us = self.event_us[mask], self.created_us[mask]
        self._columns = [(name, col.take(take)) for name, col in self._columns]

    def encoded_rows(self, start: int = 0, stop: int | None = None) -> pa.Array:
        """The encoded rows ``start:stop`` (all by default)."""
        n = len(self)
        stop = n if stop is None else min(stop, n)
        if start == 0 and stop == n:
            return encode_rows(self._columns, self.event_us, self.created_us)
        columns = [(name, col.slice(start, stop - start)) for name, col in self._columns]
        return encode_rows(columns, self.event_us[start:stop], self.created_us[start:stop])
