"""Declarative device profiles: a vendor JSON format described in TOML (format ``profile:<name>``).

A profile lists templates; the first whose ``match`` conditions hold decodes the message. A
template reads device id, time, sequence number and values through compiled paths
(:mod:`gateway.formats.paths`), optionally once per item of an ``each`` array. Files are loaded
and validated by :mod:`gateway.formats.profile_loader`, whose :func:`load_profile` and
:func:`load_profiles` are re-exported here. The file format is documented in
``docs/payload-formats.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import DecodeError
from gateway.formats.base import (
    DecodeContext,
    DecodeResult,
    describe,
    load_json,
    parse_epoch_ms,
    parse_epoch_s,
    parse_rfc3339,
    parse_seq,
)
from gateway.formats.paths import MISSING, IterationPath, JsonPath
from gateway.records import RawReading, Rejection

__all__ = [
    "TIMESTAMP_FORMATS",
    "DeviceProfile",
    "Template",
    "ValueSpec",
    "load_profile",
    "load_profiles",
]


def _rfc3339(value: object, field: str) -> int:
    if type(value) is not str:
        raise DecodeError(
            "bad_timestamp", f"{field}: expected an RFC 3339 string, got {describe(value)}", field
        )
    return parse_rfc3339(value, field)


TIMESTAMP_FORMATS: dict[str, Callable[[object, str], int]] = {
    "rfc3339": _rfc3339,
    "epoch_ms": parse_epoch_ms,
    "epoch_s": parse_epoch_s,
}
"""``timestamp_format`` value -> parser of the raw JSON value into UTC microseconds."""


def _absent(value: object) -> bool:
    return value is MISSING or value is None


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """One value a template reads.

    Attributes:
        value: Path to the number.
        metric: Fixed metric identifier, or ``None`` when ``metric_from`` names it.
        metric_from: Path to a vendor code, looked up in ``metric_map``.
        metric_map: Vendor code -> metric identifier.
        unmapped: ``reject`` or ``skip`` an item whose code is not in ``metric_map``.
        unit: Fixed UCUM unit, or ``None`` when ``unit_from`` names it.
        unit_from: Path to the unit as sent, mapped through ``unit_map`` (others pass through).
        unit_map: Vendor unit spelling -> UCUM.
        required: Whether an absent value is a rejection (else it is skipped).
    """

    value: JsonPath
    metric: str | None = None
    metric_from: JsonPath | None = None
    metric_map: dict[str, str] = field(default_factory=dict)
    unmapped: str = "reject"
    unit: str | None = None
    unit_from: JsonPath | None = None
    unit_map: dict[str, str] = field(default_factory=dict)
    required: bool = True

    def _metric(self, item: object, root: object) -> str | None:
        if self.metric_from is None:
            return self.metric
        code = self.metric_from.get(item, root)
        if code is MISSING or code is None:
            raise _Fault("missing_field", self.metric_from, "metric code is missing")
        key = str(code) if type(code) is int else code
        metric = self.metric_map.get(key) if type(key) is str else None
        if metric is None and self.unmapped != "skip":
            known = ", ".join(self.metric_map)
            problem = f"{describe(code)} is not a code of metric_map ({known})"
            raise _Fault("bad_value", self.metric_from, problem)
        return metric

    def _unit(self, item: object, root: object) -> str:
        if self.unit_from is None:
            return self.unit or ""
        unit = self.unit_from.get(item, root)
        if type(unit) is not str or not unit:
            if unit is MISSING or unit is None:
                raise _Fault("missing_field", self.unit_from, "unit is missing")
            raise _Fault(
                "bad_value", self.unit_from, f"expected a unit string, got {describe(unit)}"
            )
        return self.unit_map.get(unit, unit)

    def read(
        self, raw: object, item: object, root: object, head: tuple[str, int, int | None]
    ) -> RawReading | None:
        """The reading for a present ``raw`` value; ``None`` for a skipped unmapped code.

        Raises:
            _Fault: Naming the path at fault (formatted by the template, only on this path).
        """
        metric = self._metric(item, root)
        if metric is None:
            return None
        # orjson yields only finite numbers, so a type check is all a value needs.
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise _Fault("bad_value", self.value, f"expected a number, got {describe(raw)}")
        device_id, observed_at_us, seq = head
        unit = self._unit(item, root)
        return RawReading(device_id, metric, float(raw), unit, observed_at_us, seq)


class _Fault(Exception):
    """A value that cannot be read; the template turns it into a rejection naming the field."""

    def __init__(self, code: str, path: JsonPath, problem: str) -> None:
        super().__init__(problem)
        self.code = code
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Template:
    """One way a profile's messages can look.

    Attributes:
        name: Name used in messages (``templates[i]`` unless set).
        match: ``(path, expected)`` pairs that must all hold on the message root.
        each: Iterate the items of this array; paths then start at the item (``$$`` = root).
        device_id: Path to the device id, or ``None`` to take it from the topic.
        timestamp: Path to the device time.
        timestamp_format: A key of :data:`TIMESTAMP_FORMATS`.
        seq: Path to the sequence number, or ``None``.
        values: The values read from each message (or item).
        shares_head: Derived: device id, time and seq all come from the topic or message root,
            so they are read once per message.
    """

    name: str
    match: tuple[tuple[JsonPath, object], ...]
    each: IterationPath | None
    device_id: JsonPath | None
    timestamp: JsonPath
    timestamp_format: str
    seq: JsonPath | None
    values: tuple[ValueSpec, ...]
    shares_head: bool = field(init=False)

    def __post_init__(self) -> None:
        paths = (self.device_id, self.timestamp, self.seq)
        shared = self.each is None or all(p is None or p.from_root for p in paths)
        object.__setattr__(self, "shares_head", shared)

    def matches(self, doc: object) -> bool:
        """Whether every ``match`` condition holds on ``doc``."""
        for path, expected in self.match:
            got = path.get(doc)
            if got != expected or isinstance(got, bool) != isinstance(expected, bool):
                return False
        return True

    def _device(self, item: object, root: object, at: str, captured: str | None) -> str:
        raw = self.device_id.get(item, root) if self.device_id is not None else MISSING
        if _absent(raw):
            if captured is not None:
                return captured
            where = self.device_id.field(at) if self.device_id is not None else ""
            raise DecodeError(
                "missing_field", f"{where or '$'}: no device id in the payload or topic", where
            )
        assert self.device_id is not None
        where = self.device_id.field(at)
        if not (type(raw) is str and raw) and type(raw) is not int:
            raise DecodeError(
                "bad_value", f"{where}: expected a device id string, got {describe(raw)}", where
            )
        device_id = str(raw)
        if captured is not None and device_id != captured:
            raise DecodeError(
                "device_mismatch",
                f"{where}: payload names device {device_id!r} but the topic names {captured!r}",
                where,
            )
        return device_id

    def _head(
        self, item: object, root: object, at: str, captured: str | None
    ) -> tuple[str, int, int | None]:
        """Device id, time and sequence number of one message or item."""
        device_id = self._device(item, root, at, captured)
        ts = self.timestamp.get(item, root)
        where = self.timestamp.field(at)
        if _absent(ts):
            raise DecodeError("missing_field", f"{where}: timestamp is missing", where)
        observed_at_us = TIMESTAMP_FORMATS[self.timestamp_format](ts, where)
        seq = None
        if self.seq is not None:
            raw_seq = self.seq.get(item, root)
            seq = None if _absent(raw_seq) else parse_seq(raw_seq, self.seq.field(at))
        return device_id, observed_at_us, seq

    def _at(self, index: int) -> str:
        """JSON path of the message (``$``) or of ``each`` item ``index``."""
        return "$" if self.each is None else self.each.item_field(index)

    def _values(
        self,
        item: object,
        root: object,
        index: int,
        head: tuple[str, int, int | None],
        out: DecodeResult,
    ) -> None:
        """The values of one message (or ``each`` item) into ``out``."""
        present = False
        for spec in self.values:
            raw = spec.value.get(item, root)
            try:
                if raw is MISSING or raw is None:
                    if not spec.required:
                        continue
                    raise _Fault("missing_field", spec.value, "required value is missing")
                present = True
                reading = spec.read(raw, item, root, head)
            except _Fault as fault:
                present = True
                where = fault.path.field(self._at(index))
                reason = f"{where}: {fault.problem}"
                out.rejections.append(Rejection(fault.code, where, reason, head[0]))
                continue
            if reading is not None:
                out.readings.append(reading)
        if not present:
            at = self._at(index)
            paths = ", ".join(spec.value.field(at) for spec in self.values)
            reason = f"{at}: none of the values is present ({paths})"
            out.rejections.append(Rejection("missing_field", at, reason, head[0]))

    def decode(self, doc: object, ctx: DecodeContext) -> DecodeResult:
        """Readings and rejections of a parsed message this template matched.

        Raises:
            DecodeError: When the message's shared device id, time or seq is unusable, or the
                ``each`` array is absent or not an array.
        """
        out = DecodeResult([], [])
        if self.each is None:
            items: list[object] = [doc]
        else:
            found = self.each.items(doc)
            if found is None:
                container = self.each.container.get(doc)
                where = self.each.container.field()
                if _absent(container):
                    raise DecodeError(
                        "missing_field", f"{where}: array to iterate is missing", where
                    )
                reason = f"{where}: expected an array, got {describe(container)}"
                raise DecodeError("bad_shape", reason, where)
            items = found
        # Shared parts are read once, so one bad root time costs one rejection, not one per item.
        shared = self._head(doc, doc, "$", ctx.device_id) if self.shares_head and items else None
        for i, item in enumerate(items):
            if shared is not None:
                head = shared
            else:
                try:
                    head = self._head(item, doc, self._at(i), ctx.device_id)
                except DecodeError as exc:
                    named = self.device_id.get(item, doc) if self.device_id else None
                    device_id = ctx.device_id or (named if type(named) is str else "")
                    out.rejections.append(
                        Rejection(exc.reason_code, exc.field, str(exc), device_id)
                    )
                    continue
            self._values(item, doc, i, head, out)
        return out


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """A loaded device profile.

    Attributes:
        name: Profile name; routes refer to it as ``profile:<name>``.
        description: One line on the device and format.
        templates: Tried in order; the first that matches decodes the message.
        source: The file it was loaded from.
    """

    name: str
    description: str
    templates: tuple[Template, ...]
    source: Path | None = None

    def decode(self, payload: bytes, ctx: DecodeContext) -> DecodeResult:
        """Decode one message (the :data:`~gateway.formats.base.Decoder` contract).

        Raises:
            DecodeError: ``malformed_json``; ``no_template`` when no template matches;
                ``missing_field``/``bad_shape`` when an ``each`` array is absent or not an array.
        """
        doc = load_json(payload)
        for template in self.templates:
            if template.matches(doc):
                return template.decode(doc, ctx)
        names = ", ".join(t.name for t in self.templates)
        raise DecodeError(
            "no_template", f"$: message matches no template of profile {self.name!r} ({names})"
        )


# Last, because the loader builds the classes above; callers may import it from either module.
from gateway.formats.profile_loader import load_profile, load_profiles  # noqa: E402
