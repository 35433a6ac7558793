"""Record Access Control Point (0x2A52): requests the collector writes, responses it gets.

Used by the receiver (glucose sync: "report records with sequence >= N") and by the virtual
glucose meter, so both sides share one encoding.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from gateway.ble.codec import Reader
from gateway.ble.model import NO_CONTEXT, BleContext, Decoded
from gateway.errors import DecodeError

__all__ = [
    "FILTER_SEQUENCE",
    "Op",
    "Operator",
    "RacpRequest",
    "RacpResponse",
    "ResponseCode",
    "decode_racp",
    "parse_request",
    "parse_response",
    "report_all",
    "report_count",
    "report_from",
]


class Op(enum.IntEnum):
    """RACP op codes."""

    REPORT_RECORDS = 1
    DELETE_RECORDS = 2
    ABORT = 3
    REPORT_NUMBER = 4
    NUMBER_RESPONSE = 5
    RESPONSE_CODE = 6


class Operator(enum.IntEnum):
    """RACP operators."""

    NULL = 0
    ALL = 1
    LESS_OR_EQUAL = 2
    GREATER_OR_EQUAL = 3
    RANGE = 4
    FIRST = 5
    LAST = 6


class ResponseCode(enum.IntEnum):
    """RACP response codes."""

    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERATOR = 3
    OPERATOR_NOT_SUPPORTED = 4
    INVALID_OPERAND = 5
    NO_RECORDS_FOUND = 6
    ABORT_UNSUCCESSFUL = 7
    PROCEDURE_NOT_COMPLETED = 8
    OPERAND_NOT_SUPPORTED = 9


FILTER_SEQUENCE = 0x01
"""Filter type: GLS sequence number (CGM: time offset)."""


class RacpRequest(NamedTuple):
    """A request: op code, operator and (for >=, <=, range) filter values."""

    op: int
    operator: int
    filter_type: int | None = None
    values: tuple[int, ...] = ()


class RacpResponse(NamedTuple):
    """A response: number of records (op 5) or response code for a request op code (op 6)."""

    op: int
    records: int | None = None
    request_op: int | None = None
    code: int | None = None


def report_all() -> bytes:
    """Report every stored record."""
    return bytes([Op.REPORT_RECORDS, Operator.ALL])


def report_from(sequence: int) -> bytes:
    """Report the records with sequence number >= ``sequence``."""
    return bytes([Op.REPORT_RECORDS, Operator.GREATER_OR_EQUAL, FILTER_SEQUENCE]) + (
        sequence & 0xFFFF
    ).to_bytes(2, "little")


def report_count(sequence: int | None = None) -> bytes:
    """Report the number of records (all, or those >= ``sequence``)."""
    if sequence is None:
        return bytes([Op.REPORT_NUMBER, Operator.ALL])
    return bytes([Op.REPORT_NUMBER, Operator.GREATER_OR_EQUAL, FILTER_SEQUENCE]) + (
        sequence & 0xFFFF
    ).to_bytes(2, "little")


def parse_request(data: bytes) -> RacpRequest:
    """A request as written to the control point.

    Raises:
        DecodeError: Truncated, or an operand that does not fit the operator.
    """
    r = Reader(data, "Record Access Control Point")
    op, operator = r.u8("op_code"), r.u8("operator")
    if operator in (Operator.LESS_OR_EQUAL, Operator.GREATER_OR_EQUAL, Operator.RANGE):
        filter_type = r.u8("filter_type")
        n = 2 if operator == Operator.RANGE else 1
        values = tuple(r.u16("operand") for _ in range(n))
        r.finish()
        return RacpRequest(op, operator, filter_type, values)
    r.finish()
    return RacpRequest(op, operator)


def parse_response(data: bytes) -> RacpResponse:
    """A response indicated by the device.

    Raises:
        DecodeError: Truncated, or not a response op code.
    """
    r = Reader(data, "Record Access Control Point")
    op = r.u8("op_code")
    r.u8("operator")
    if op == Op.NUMBER_RESPONSE:
        count = r.u16("number_of_records")
        r.finish()
        return RacpResponse(op, records=count)
    if op == Op.RESPONSE_CODE:
        request_op, code = r.u8("request_op_code"), r.u8("response_code")
        r.finish()
        return RacpResponse(op, request_op=request_op, code=code)
    raise DecodeError(
        "bad_value", f"Record Access Control Point: op_code: {op} is not a response (5 or 6)",
        "op_code",
    )


def _name(enum_type: type[enum.IntEnum], value: int) -> str:
    try:
        return enum_type(value).name.lower()
    except ValueError:
        return f"reserved ({value})"


def decode_racp(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """A control point value, request or response, for ``vitalwire ble decode``."""
    fields: dict[str, object]
    if data[:1] in (bytes([Op.NUMBER_RESPONSE]), bytes([Op.RESPONSE_CODE])):
        resp = parse_response(data)
        fields = {"op_code": _name(Op, resp.op)}
        if resp.records is not None:
            fields["number_of_records"] = resp.records
        else:
            fields["request_op_code"] = _name(Op, resp.request_op or 0)
            fields["response_code"] = _name(ResponseCode, resp.code or 0)
    else:
        req = parse_request(data)
        fields = {"op_code": _name(Op, req.op), "operator": _name(Operator, req.operator)}
        if req.filter_type is not None:
            fields["filter_type"] = req.filter_type
            fields["operand"] = list(req.values)
    return Decoded(0x2A52, "Record Access Control Point", fields)
