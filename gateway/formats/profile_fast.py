"""The common case of a device profile, decoded without the bookkeeping of the careful path.

:func:`compile_profile` turns a :class:`~gateway.formats.profiles.DeviceProfile` into a
:data:`~gateway.formats.base.FastDecoder`. It reads the same paths with the same rules as
:meth:`Template.decode <gateway.formats.profiles.Template.decode>`, but it never builds a
rejection: on anything the careful path would reject or raise for (a missing field, a wrong
type, an unmapped code, a device mismatch, no matching template...) it gives up with ``None``,
and the router decodes the message again the careful way, with the exact reasons and fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import orjson

from gateway.formats.base import (
    MAX_TIME_US,
    MIN_TIME_US,
    SEQ_LIMIT,
    DecodeResult,
    FastDecoder,
    parse_epoch_ms,
    parse_epoch_s,
    parse_rfc3339,
)
from gateway.formats.paths import MISSING, JsonPath
from gateway.records import RawReading

if TYPE_CHECKING:
    from gateway.formats.profiles import DeviceProfile, Template, ValueSpec

__all__ = ["compile_getter", "compile_profile"]

Getter = Callable[[object, object], object]
"""``(item, root) -> value``: a compiled :meth:`JsonPath.get`, the root always given."""

_new_tuple = tuple.__new__


def compile_getter(path: JsonPath) -> Getter:
    """A function giving exactly ``path.get(item, root)``, specialised for short key paths."""
    keys = [step for step in path.steps if isinstance(step, str)]
    if len(keys) != len(path.steps) or len(keys) > 2:
        return path.get
    root = path.from_root
    if not keys:
        return (lambda item, doc: doc) if root else (lambda item, doc: item)
    if len(keys) == 1:
        return _one(keys[0], root)
    return _two(keys[0], keys[1], root)


def _one(key: str, root: bool) -> Getter:
    def get(item: object, doc: object) -> object:
        cur = doc if root else item
        return cur.get(key, MISSING) if type(cur) is dict else MISSING

    return get


def _two(first: str, second: str, root: bool) -> Getter:
    def get(item: object, doc: object) -> object:
        cur = doc if root else item
        if type(cur) is not dict:
            return MISSING
        cur = cur.get(first, MISSING)
        return cur.get(second, MISSING) if type(cur) is dict else MISSING

    return get


def _epoch_parser(scale: int, careful: Callable[[object, str], int]) -> Callable[[object], int]:
    """Integer epoch times inline; anything else through ``careful`` (which may raise)."""

    def parse(value: object) -> int:
        if type(value) is int:
            us = value * scale
            if MIN_TIME_US <= us <= MAX_TIME_US:
                return us
        return careful(value, "$")

    return parse


def _rfc3339(value: object) -> int:
    if type(value) is not str:
        raise TypeError("not an RFC 3339 string")
    return parse_rfc3339(value, "$")


_TIME_PARSERS: dict[str, Callable[[object], int]] = {
    "rfc3339": _rfc3339,
    "epoch_ms": _epoch_parser(1000, parse_epoch_ms),
    "epoch_s": _epoch_parser(1_000_000, parse_epoch_s),
}

Head = tuple[str, int, int | None]
HeadReader = Callable[[object, object, str | None], Head | None]


def _head_reader(template: Template) -> HeadReader:
    """Device id, time and seq of a message or item, or ``None`` where the careful path faults."""
    device = compile_getter(template.device_id) if template.device_id is not None else None
    timestamp = compile_getter(template.timestamp)
    parse_time = _TIME_PARSERS[template.timestamp_format]
    seq_of = compile_getter(template.seq) if template.seq is not None else None

    def head(item: object, root: object, captured: str | None) -> Head | None:
        raw = MISSING if device is None else device(item, root)
        if raw is MISSING or raw is None:
            if captured is None:
                return None
            device_id = captured
        else:
            if type(raw) is str and raw:
                device_id = raw
            elif type(raw) is int:
                device_id = str(raw)
            else:
                return None
            if captured is not None and device_id != captured:
                return None
        ts = timestamp(item, root)
        if ts is MISSING or ts is None:
            return None
        observed_at_us = parse_time(ts)
        seq = None
        if seq_of is not None:
            raw_seq = seq_of(item, root)
            if type(raw_seq) is int and 0 <= raw_seq < SEQ_LIMIT:
                seq = raw_seq
            elif raw_seq is not MISSING and raw_seq is not None:
                return None
        return device_id, observed_at_us, seq

    return head


class _Spec(NamedTuple):
    """A :class:`ValueSpec` as plain fields. A path is an item key (``$.key``) or a getter."""

    value_key: str | None
    value_of: Getter | None
    metric: str | None
    code_key: str | None
    code_of: Getter | None
    metric_map: dict[str, str]
    skip: bool
    unit: str
    unit_key: str | None
    unit_of: Getter | None
    unit_map: dict[str, str]
    required: bool


def _item_path(path: JsonPath | None) -> tuple[str | None, Getter | None]:
    """``(key, None)`` for a ``$.key`` path, read as ``item.get(key)``; else ``(None, getter)``.

    ``(None, None)`` for no path.
    """
    if path is None:
        return None, None
    if not path.from_root and len(path.steps) == 1 and type(path.steps[0]) is str:
        return path.steps[0], None
    return None, compile_getter(path)


def _spec(spec: ValueSpec) -> _Spec:
    """A value spec as plain fields: paths compiled, ``unit`` defaulted as the careful path."""
    return _Spec(
        *_item_path(spec.value),
        spec.metric if spec.metric_from is None else None,
        *_item_path(spec.metric_from),
        spec.metric_map,
        spec.unmapped == "skip",
        spec.unit or "",
        *_item_path(spec.unit_from),
        spec.unit_map,
        spec.required,
    )


TemplateDecoder = Callable[[object, str | None], DecodeResult | None]


def _template_decoder(template: Template) -> TemplateDecoder:
    """The fast decoder of one template, for a message it matched.

    It gives up (``None``) on any item that is not an object, leaving odd shapes to the
    careful path.
    """
    head_of = _head_reader(template)
    specs = tuple(_spec(spec) for spec in template.values)
    container = compile_getter(template.each.container) if template.each is not None else None
    shares_head = template.shares_head

    def decode(doc: object, captured: str | None) -> DecodeResult | None:
        if container is None:
            items: list[object] = [doc]
        else:
            found = container(doc, doc)
            if type(found) is not list:
                return None
            items = found
            if not items:
                return DecodeResult([], [])
        readings: list[RawReading] = []
        append = readings.append
        head = head_of(doc, doc, captured) if shares_head else None
        for item in items:
            if not shares_head:
                head = head_of(item, doc, captured)
            if head is None or type(item) is not dict:
                return None
            device_id, observed_at_us, seq = head
            get = item.get
            present = False
            for (
                value_key, value_of, metric, code_key, code_of, metric_map, skip,
                unit, unit_key, unit_of, unit_map, required,
            ) in specs:  # fmt: skip
                raw = get(value_key, MISSING) if value_of is None else value_of(item, doc)
                if raw is MISSING or raw is None:
                    if required:
                        return None
                    continue
                present = True
                if metric is None:
                    if code_key is not None:
                        code = get(code_key, MISSING)
                    elif code_of is not None:
                        code = code_of(item, doc)
                    else:
                        continue
                    key = str(code) if type(code) is int else code
                    metric = metric_map.get(key) if type(key) is str else None
                    if metric is None:
                        if code is MISSING or code is None or not skip:
                            return None
                        continue
                if type(raw) is int:
                    value = float(raw)
                elif type(raw) is float:
                    value = raw
                else:
                    return None
                if unit_key is not None or unit_of is not None:
                    sent = get(unit_key, MISSING) if unit_of is None else unit_of(item, doc)
                    if type(sent) is not str or not sent:
                        return None
                    unit = unit_map.get(sent, sent)
                reading = (device_id, metric, value, unit, observed_at_us, seq, 0)
                append(_new_tuple(RawReading, reading))
            if not present:
                return None
        return _new_tuple(DecodeResult, (readings, []))

    return decode


Matcher = Callable[[object], bool]


def _matcher(template: Template) -> Matcher:
    """Exactly :meth:`Template.matches`, with compiled getters."""
    conditions = tuple((compile_getter(path), expected) for path, expected in template.match)

    def matches(doc: object) -> bool:
        for get, expected in conditions:
            got = get(doc, doc)
            if got != expected or (type(got) is bool) != (type(expected) is bool):
                return False
        return True

    return matches


def compile_profile(profile: DeviceProfile) -> FastDecoder:
    """The :data:`~gateway.formats.base.FastDecoder` of ``profile``."""
    templates = tuple((_matcher(t), _template_decoder(t)) for t in profile.templates)

    def decode_fast(payload: bytes, device_id: str | None) -> DecodeResult | None:
        doc = orjson.loads(payload)
        for matches, decode in templates:
            if matches(doc):
                return decode(doc, device_id)
        return None

    return decode_fast
