"""The virtual glucose meter: stored records served through the Record Access Control Point.

Requests (report records, report number, delete, abort; operators all, <=, >=, range, first,
last on the sequence number) are answered as the Glucose Profile prescribes: one Glucose
Measurement notification per record, its Context after it when it has one, then the RACP
response code indicated. A write while a procedure runs gets ATT error 0xFE; a write before the
collector enabled RACP indications gets 0xFD. Tests can make the meter drop the link in the
middle of the next transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from bumble import att, gatt
from bumble.core import UUID
from bumble.device import Connection, Device

from gateway.ble import racp
from simulators.ble import encode
from simulators.ble.peripherals import Props, VirtualDevice

__all__ = ["GlucoseMeter", "GlucoseRecord"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GlucoseRecord:
    """A stored glucose meter record (value in mg/dL, sent as kg/L)."""

    seq: int
    time_us: int
    mg_dl: float
    meal: int | None = None

    def measurement(self) -> bytes:
        """The Glucose Measurement value of this record."""
        return encode.glucose_measurement(
            self.seq, self.time_us, round(self.mg_dl) / 100_000,
            context_follows=self.meal is not None,
        )

    def context(self) -> bytes | None:
        """The Glucose Measurement Context, when the record has one."""
        return None if self.meal is None else encode.glucose_context(self.seq, meal=self.meal)


@dataclass
class _Transfer:
    task: asyncio.Task[None] | None = None
    drop_after: int | None = None
    sent: list[int] = field(default_factory=list)


class GlucoseMeter(VirtualDevice):
    """Glucose service with stored records served through the RACP (op 1, 2, 3, 4)."""

    SERVICE = 0x1808
    KIND = "glucose_meter"

    def __init__(self, device: Device, **kw: object) -> None:
        super().__init__(device, **kw)  # type: ignore[arg-type]
        self.records: list[GlucoseRecord] = []
        self._next_seq = 1
        self._transfer = _Transfer()
        self.requests: list[racp.RacpRequest] = []

    def services(self) -> list[gatt.Service]:
        self.measurement = self._char(0x2A18, Props.NOTIFY)
        self.context_char = self._char(0x2A34, Props.NOTIFY)
        self.racp_char = self._char(0x2A52, Props.WRITE | Props.INDICATE, write=self._on_racp)
        return [gatt.Service(UUID.from_16_bits(self.SERVICE), [
            self.measurement, self.context_char,
            self._char(0x2A51, Props.READ, value=(0x0400).to_bytes(2, "little")),
            self.racp_char,
        ])]

    def add_record(self, time_us: int, mg_dl: float, meal: int | None = None) -> GlucoseRecord:
        """Store a new measurement with the next sequence number."""
        rec = GlucoseRecord(self._next_seq, time_us, mg_dl, meal)
        self._next_seq = (self._next_seq + 1) & 0xFFFF
        self.records.append(rec)
        return rec

    def drop_during_next_transfer(self, after_records: int) -> None:
        """Disconnect the collector after sending ``after_records`` records of the next report."""
        self._transfer.drop_after = after_records

    def _on_racp(self, connection: Connection, value: bytes) -> None:
        if self._transfer.task is not None and not self._transfer.task.done():
            if value[:1] == bytes([racp.Op.ABORT]):
                self._transfer.task.cancel()
                self._respond_later(racp.Op.ABORT, racp.ResponseCode.SUCCESS)
                return
            raise att.ATT_Error(att.ErrorCode.PROCEDURE_ALREADY_IN_PROGRESS)
        if not self.subscribed(0x2A52).is_set():
            raise att.ATT_Error(att.ErrorCode.CCCD_IMPROPERLY_CONFIGURED)
        try:
            request = racp.parse_request(value)
        except Exception:
            self._respond_later(value[0] if value else 0, racp.ResponseCode.INVALID_OPERAND)
            return
        self.requests.append(request)
        # Respond after the write response: the procedure runs in its own task.
        self._transfer.task = asyncio.get_running_loop().create_task(self._run(request))

    def _respond_later(self, op: int, code: int) -> None:
        asyncio.get_running_loop().create_task(self._respond(op, code))

    async def _respond(self, op: int, code: int) -> None:
        await asyncio.sleep(0)
        with contextlib.suppress(Exception):
            await self.device.indicate_subscribers(
                self.racp_char, bytes([racp.Op.RESPONSE_CODE, 0, op, code])
            )

    def _select(self, req: racp.RacpRequest) -> list[GlucoseRecord] | None:
        recs = self.records
        match req.operator:
            case racp.Operator.ALL:
                return list(recs)
            case racp.Operator.FIRST:
                return recs[:1]
            case racp.Operator.LAST:
                return recs[-1:]
            case racp.Operator.GREATER_OR_EQUAL if req.values:
                return [r for r in recs if r.seq >= req.values[0]]
            case racp.Operator.LESS_OR_EQUAL if req.values:
                return [r for r in recs if r.seq <= req.values[0]]
            case racp.Operator.RANGE if len(req.values) == 2:
                return [r for r in recs if req.values[0] <= r.seq <= req.values[1]]
        return None

    async def _run(self, req: racp.RacpRequest) -> None:
        await asyncio.sleep(0)
        if req.op not in (racp.Op.REPORT_RECORDS, racp.Op.REPORT_NUMBER, racp.Op.DELETE_RECORDS):
            await self._respond(req.op, racp.ResponseCode.OP_CODE_NOT_SUPPORTED)
            return
        selected = self._select(req)
        if selected is None:
            await self._respond(req.op, racp.ResponseCode.INVALID_OPERATOR)
            return
        if req.op == racp.Op.REPORT_NUMBER:
            with contextlib.suppress(Exception):
                await self.device.indicate_subscribers(
                    self.racp_char, bytes([racp.Op.NUMBER_RESPONSE, 0])
                    + len(selected).to_bytes(2, "little"),
                )
            return
        if req.op == racp.Op.DELETE_RECORDS:
            gone = {r.seq for r in selected}
            self.records = [r for r in self.records if r.seq not in gone]
            await self._respond(req.op, racp.ResponseCode.SUCCESS if selected
                                else racp.ResponseCode.NO_RECORDS_FOUND)
            return
        if not selected:
            await self._respond(req.op, racp.ResponseCode.NO_RECORDS_FOUND)
            return
        for n, rec in enumerate(selected):
            if self._transfer.drop_after is not None and n >= self._transfer.drop_after:
                self._transfer.drop_after = None
                log.info("%s: dropping the link after %d records", self.name, n)
                await self.drop_connections()
                return
            await self.device.notify_subscribers(self.measurement, rec.measurement())
            ctx = rec.context()
            if ctx is not None:
                await self.device.notify_subscribers(self.context_char, ctx)
            self._transfer.sent.append(rec.seq)
            self.sent += 1
        await self._respond(req.op, racp.ResponseCode.SUCCESS)
