"""Reading one Kafka message as one event of a stream job, or the reason it cannot be read.

A message is a JSON object (UTF-8) whose fields are the source's columns (its raw names, before the
source's ``field_mapping``). Every column the blueprint lists must be present (``null`` is a value, except
for the join keys and the event time, which must be non-null); other fields are ignored. Values are
checked against the column's type exactly as a push is, never coerced from another kind:

- Int32/Int64: a JSON integer in range (``true``/``false`` and ``1.0`` are not integers);
- Float32/Float64: a JSON number; String: a string; Bool: ``true``/``false``;
- Bytes: base64 text; Timestamp: ISO 8601 text (a time without a zone is UTC) or a JSON integer of
  epoch milliseconds.

``parse`` returns the row the job hands to Flink SQL (timestamps as ``YYYY-MM-DD HH:MM:SS.ffffff``
UTC text, which Flink SQL casts to ``TIMESTAMP(6)``, see ``featurestore.streaming.blueprint.events_view_sql``)
or raises ``EventError`` whose message is the reason written to the dead-letter topic.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from featurestore.streaming.blueprint import EventColumn

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT_RANGE = {"Int64": (-(2**63), 2**63 - 1), "Int32": (-(2**31), 2**31 - 1)}


class EventError(ValueError):
    """A message that is not a valid event; the message text is the reason."""


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_time(value: Any, name: str) -> datetime:
    """ISO 8601 text or epoch milliseconds to an aware UTC datetime."""
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            raise EventError(f"field {name!r} should be an ISO 8601 timestamp, got {_show(value)}") from None
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            raise EventError(f"field {name!r}: {value} epoch milliseconds is out of range") from None
    raise EventError(f"field {name!r} should be a timestamp (ISO 8601 text or epoch milliseconds), "
                     f"got {_show(value)}")


def time_text(t: datetime) -> str:
    """The UTC wall-clock text Flink SQL casts to ``TIMESTAMP(6)``."""
    return t.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _convert(value: Any, dtype: str, name: str) -> Any:
    if dtype in _INT_RANGE:
        if not isinstance(value, int) or isinstance(value, bool):
            raise EventError(f"field {name!r} should be {dtype} (a JSON integer), got {_show(value)}")
        lo, hi = _INT_RANGE[dtype]
        if not lo <= value <= hi:
            raise EventError(f"field {name!r}: {value} is out of range for {dtype}")
        return value
    if dtype in ("Float32", "Float64"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise EventError(f"field {name!r} should be {dtype} (a JSON number), got {_show(value)}")
        return float(value)
    if dtype == "String":
        if not isinstance(value, str):
            raise EventError(f"field {name!r} should be String (a JSON string), got {_show(value)}")
        return value
    if dtype == "Bool":
        if not isinstance(value, bool):
            raise EventError(f"field {name!r} should be Bool (true or false), got {_show(value)}")
        return value
    if dtype == "Bytes":
        if not isinstance(value, str):
            raise EventError(f"field {name!r} should be Bytes (base64 text), got {_show(value)}")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise EventError(f"field {name!r} is not valid base64: {_show(value)}") from None
    if dtype == "Timestamp":
        return time_text(parse_time(value, name))
    raise EventError(f"field {name!r} has unsupported type {dtype}")


def parse(raw: bytes | str | None, columns: Sequence[EventColumn]) -> list[Any]:
    """The event's values in ``columns`` order (see the module docs), or ``EventError``."""
    if raw is None:
        raise EventError("empty message (no value)")
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventError(f"message is not UTF-8 text ({exc})") from None
    import orjson

    try:
        obj = orjson.loads(raw)
    except ValueError:
        try:
            obj = json.loads(raw)  # the standard library also reads NaN and Infinity
        except ValueError as exc:
            raise EventError(f"bad JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EventError(f"message is JSON but not an object: {_show(obj)}")
    out = []
    for c in columns:
        field = c.json
        if field not in obj:
            raise EventError(f"missing field {field!r}")
        value = obj[field]
        if value is None:
            if c.required:
                raise EventError(f"field {field!r} is null (join keys and the event time must have a value)")
            out.append(None)
            continue
        out.append(_convert(value, c.dtype.name, field))
    return out


def dumps_values(values: list[Any]) -> str:
    """A parsed event's values as a JSON array (orjson unless a float is NaN or infinite)."""
    import math

    import orjson

    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        return json.dumps(values)
    return orjson.dumps(values).decode()


def dead_letter(reason: str, raw: bytes | str | None, *, view: str, topic: str, partition: int | None,
                offset: int | None) -> str:
    """The dead-letter record (JSON text): why, where from, and the message itself (text, or base64 when
    it is not UTF-8)."""
    record: dict[str, Any] = {"reason": reason, "view": view, "topic": topic, "partition": partition,
                              "offset": offset}
    if isinstance(raw, (bytes, bytearray)):
        try:
            record["value"] = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            record["value_base64"] = base64.b64encode(bytes(raw)).decode("ascii")
    else:
        record["value"] = raw
    return json.dumps(record)
