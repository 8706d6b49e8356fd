"""Reading one Kafka message as one event of a stream job, or the reason it cannot be read.

A message is a JSON object (UTF-8) whose fields are the source's columns (its raw names, before the
source's ``field_mapping``). Every column the blueprint lists must be present (``null`` is a value, except
for the join keys and the event time, which must be non-null); other fields are ignored. Values are
checked against the column's type by the same rules as a push (``featurestore.values``), never coerced
from another kind:

- Int32/Int64: a JSON integer in range (``true``/``false`` and ``1.0`` are not integers, text is
  never a number);
- Float32/Float64: a JSON number; ``NaN`` and ``Infinity`` (which some producers write) are refused,
  and so is a finite value beyond Float32's range for a Float32;
- String: a string; Bool: ``true``/``false``; Bytes: base64 text;
- Timestamp (the event time and any Timestamp column): ISO 8601 text (a time without a zone is UTC)
  or a JSON integer of epoch MILLISECONDS, in ``1678-01-01T00:00:00Z <= t < 2262-01-01T00:00:00Z``
  (``featurestore.timestamps``: the same rule as a direct push and a lookup's request data).

``parse`` returns the row the job hands to Flink SQL (timestamps as ``YYYY-MM-DD HH:MM:SS.ffffff``
UTC text, which Flink SQL casts to ``TIMESTAMP(6)``, see ``featurestore.streaming.blueprint.events_view_sql``)
or raises ``EventError`` whose message is the reason written to the dead-letter topic (it names the
field).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Sequence

from featurestore import timestamps, values
from featurestore.errors import InvalidInputError

if TYPE_CHECKING:
    from featurestore.streaming.blueprint import EventColumn
    from featurestore.types import DataType

UTC = timezone.utc


class EventError(ValueError):
    """A message that is not a valid event; the message text is the reason."""


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_time(value: Any, name: str) -> datetime:
    """ISO 8601 text or epoch milliseconds, in the accepted range, to an aware UTC datetime."""
    try:
        return timestamps.parse_instant(value, f"field {name!r}")
    except InvalidInputError as exc:
        raise EventError(str(exc)) from None


def time_text(t: datetime) -> str:
    """The UTC wall-clock text Flink SQL casts to ``TIMESTAMP(6)``."""
    return t.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _convert(value: Any, dtype: DataType, name: str) -> Any:
    try:
        converted = values.scalar(value, dtype, f"field {name!r}")
    except InvalidInputError as exc:
        raise EventError(str(exc)) from None
    return time_text(converted) if dtype.family == "timestamp" else converted


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
        out.append(_convert(value, c.dtype, field))
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
