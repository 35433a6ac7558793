"""Random bytes never make a decoder fail with anything but DecodeError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ble import racp
from gateway.ble.codec import decode_float, decode_sfloat
from gateway.ble.model import BleContext, Decoded
from gateway.ble.registry import DECODERS
from gateway.errors import DecodeError
from gateway.formats.base import DecodeContext
from gateway.formats.ble import decode_ble

CONTEXTS = st.builds(
    BleContext,
    st.one_of(st.none(), st.integers(0, 2**53)),
    st.one_of(st.none(), st.integers(-10**6, 10**6)),
)
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("uuid16", sorted(DECODERS), ids=lambda u: f"0x{u:04X}")
@FUZZ
@given(data=st.binary(max_size=40), ctx=CONTEXTS)
def test_decoders_raise_only_decode_error(uuid16: int, data: bytes, ctx: BleContext) -> None:
    try:
        decoded = DECODERS[uuid16](data, ctx)
    except DecodeError as exc:
        assert exc.reason_code and str(exc)
        return
    assert isinstance(decoded, Decoded)
    decoded.to_json()
    for r in decoded.readings:
        assert r.quantity.value is not None or r.quantity.absent is not None


@pytest.mark.parametrize("uuid16", sorted(DECODERS), ids=lambda u: f"0x{u:04X}")
@FUZZ
@given(flags=st.integers(0, 255), rest=st.binary(max_size=30))
def test_every_flag_combination(uuid16: int, flags: int, rest: bytes) -> None:
    with contextlib.suppress(DecodeError):
        DECODERS[uuid16](bytes([flags]) + rest, BleContext())


@FUZZ
@given(data=st.binary(max_size=40), uuid16=st.sampled_from(sorted(DECODERS)))
def test_format_decoder_raises_only_decode_error(data: bytes, uuid16: int) -> None:
    with contextlib.suppress(DecodeError):
        decode_ble(data, DecodeContext(f"ble/D-1/{uuid16:04x};sst=0", "D-1", 1))


@given(st.binary(max_size=8))
def test_racp_parsers(data: bytes) -> None:
    for parse in (racp.parse_request, racp.parse_response):
        with contextlib.suppress(DecodeError):
            parse(data)


@given(st.integers(0, 0xFFFF))
def test_every_sfloat_is_a_number_or_a_reason(raw: int) -> None:
    q = decode_sfloat(raw)
    assert (q.value is None) != (q.absent is None)


@given(st.integers(0, 0xFFFFFFFF))
def test_every_float_is_a_number_or_a_reason(raw: int) -> None:
    q = decode_float(raw)
    assert (q.value is None) != (q.absent is None)
