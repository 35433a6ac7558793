"""BufferedClient: byte-exact parsing and writing on a fake socket, then against real mosquitto."""

from __future__ import annotations

import collections
import random
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, _ConnectionState
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import gateway.mqtt_client
from gateway.mqtt_client import BufferedClient
from tests.support.mqtt import Publisher, wait_until
from vitalwire.broker import MosquittoBroker, free_port

PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}
Message = tuple[str, bytes, int, int]  # topic, payload, mid, qos
Client = TypeVar("Client", bound=mqtt.Client)

# -- fake socket --------------------------------------------------------------------------------


def publish_packet(topic: str, payload: bytes, mid: int, qos: int, v5: bool) -> bytes:
    body = struct.pack("!H", len(topic)) + topic.encode()
    if qos:
        body += struct.pack("!H", mid)
    if v5:
        body += b"\x00"  # no properties
    body += payload
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (0x80 if n else 0))
        if not n:
            return bytes([0x30 | qos << 1]) + bytes(length) + body


def pubacks(mids: list[int]) -> bytes:
    return b"".join(struct.pack("!BBH", 0x40, 2, m) for m in mids)


class FakeSock:
    """``recv`` serves ``chunks`` in order (a ``BlockingIOError`` entry raises once); ``send``
    records. ``send_plan(n)`` gives how many of ``n`` bytes a send takes (-1: would block).
    ``websocket``: send as paho's websocket wrapper does (0 until its whole frame is out, then
    the length of the data that started the frame, whatever the later calls pass)."""

    def __init__(
        self,
        chunks: list[Any],
        send_plan: Callable[[int], int] | None = None,
        websocket: bool = False,
    ) -> None:
        self.chunks = collections.deque(chunks)
        self.sent = bytearray()
        self.sends = 0
        self.send_plan = send_plan
        self.websocket = websocket
        self.frame = b""
        self.frame_len = 0

    def recv(self, n: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        head = self.chunks.popleft()
        if head is BlockingIOError:
            raise BlockingIOError
        if len(head) > n:
            self.chunks.appendleft(head[n:])
        return bytes(head[:n])

    def send(self, buf: bytes) -> int:
        self.sends += 1
        if self.websocket and not self.frame:
            self.frame, self.frame_len = bytes(buf), len(buf)
        data = self.frame if self.websocket else bytes(buf)
        k = len(data) if self.send_plan is None else self.send_plan(len(data))
        if k < 0:
            raise BlockingIOError
        self.sent += data[:k]
        if not self.websocket:
            return min(k, len(data))
        self.frame = self.frame[k:]
        return 0 if self.frame else self.frame_len

    def close(self) -> None:
        pass

    def fileno(self) -> int:
        return -1


def fake_client(
    protocol: str, sock: FakeSock, manual_ack: bool = False
) -> tuple[BufferedClient, list[Message]]:
    c = BufferedClient(
        CallbackAPIVersion.VERSION2, protocol=PROTOCOLS[protocol], manual_ack=manual_ack
    )
    got: list[Message] = []
    c.on_message = lambda cl, u, m: got.append((m.topic, bytes(m.payload), m.mid, m.qos))
    c._sock = sock  # type: ignore[assignment]
    c._state = _ConnectionState.MQTT_CS_CONNECTED
    return c, got


def stream_of(v5: bool, big: int = 0) -> tuple[bytes, list[Message]]:
    """QoS 1 and 0 PUBLISHes with a PINGRESP in between (and a ``big``-byte one at the end)."""
    msgs = [
        ("a/b", b"x", 1, 1),
        ("medsys/bedside/BM-1/vitals", b'{"v":1}' * 40, 2, 1),
        ("q0/topic", b"zero", 0, 0),
        ("c", b"", 3, 1),
    ]
    if big:
        msgs.append(("big/one", random.Random(big).randbytes(big), 4, 1))
    parts = [publish_packet(t, p, mid, q, v5) for t, p, mid, q in msgs]
    parts.insert(2, b"\xd0\x00")  # PINGRESP
    return b"".join(parts), msgs


def drive(c: BufferedClient, sock: FakeSock) -> None:
    """Call loop_read as paho's loop does when select() says readable, until no bytes are left."""
    for _ in range(10_000):
        assert c.loop_read() == mqtt.MQTT_ERR_SUCCESS
        if not sock.chunks:
            assert c._bf_buffered() == 0  # else select() would sleep on buffered packets
            return
    raise AssertionError("loop_read made no progress")


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize("read_size", [1, 3, 64, 65536])
def test_stream_split_at_every_byte(protocol: str, read_size: int) -> None:
    data, msgs = stream_of(protocol == "5")
    for k in range(1, len(data)):
        sock = FakeSock([data[:k], BlockingIOError, data[k:]])
        c, got = fake_client(protocol, sock)
        c.READ_SIZE = read_size
        c._ping_t = 123.0
        drive(c, sock)
        assert got == msgs, k
        assert c._ping_t == 0, k  # the PINGRESP was handled too
        assert bytes(sock.sent) == pubacks([1, 2, 3]), k  # one automatic PUBACK per QoS 1


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize("big", [65536 - 20, 65536 + 3, 200_000])
def test_large_packets_in_random_chunks(protocol: str, big: int) -> None:
    rng = random.Random(big)
    data, msgs = stream_of(protocol == "5", big)
    for trial in range(10):
        chunks: list[Any] = []
        i = 0
        while i < len(data):
            n = rng.choice([1, 2, 3, 5, 100, 4096, 65536, 100_000])
            chunks += [data[i : i + n], BlockingIOError]
            i += n
        sock = FakeSock(chunks)
        c, got = fake_client(protocol, sock)
        c.READ_SIZE = rng.choice([7, 1000, 65536])
        drive(c, sock)
        assert got == msgs, trial
        assert bytes(sock.sent) == pubacks([1, 2, 3, 4])


def test_refill_budget_never_leaves_bytes_buffered() -> None:
    data, _ = stream_of(True)
    data *= 50
    sock = FakeSock([data[i : i + 10] for i in range(0, len(data), 10)])
    c, got = fake_client("5", sock)
    c.READ_SIZE = 10
    c.MAX_REFILLS = 3
    calls = 0
    while sock.chunks:
        c.loop_read()
        calls += 1
        assert c._bf_buffered() == 0
    assert calls >= len(data) // 30  # each call stopped after its 3 reads
    assert len(got) == 4 * 50


def test_buffer_of_an_old_socket_is_dropped() -> None:
    data, msgs = stream_of(True)
    c, got = fake_client("5", FakeSock([data]))
    assert c._sock_recv(1) == data[:1]
    assert c._bf_buffered() == len(data) - 1
    fresh = FakeSock([data])
    c._sock = fresh  # type: ignore[assignment]  # what a reconnect does
    drive(c, fresh)
    assert got == msgs


@pytest.mark.parametrize("websocket", [False, True], ids=["socket", "websocket"])
@pytest.mark.parametrize("seed", range(8))
def test_coalesced_writes_survive_partial_and_blocked_sends(seed: int, websocket: bool) -> None:
    rng = random.Random(seed)
    # A real send() never takes 0 bytes of a non-empty buffer (a websocket returns 0 by design).
    sock = FakeSock([], lambda n: rng.choice([-1, 1, 3, 4, 5, n, n, n]), websocket)
    c, _ = fake_client("5", sock, manual_ack=True)
    published: list[int] = []
    c.on_publish = lambda *a: published.append(a[2])
    c._thread = threading.current_thread()  # as under loop_start(): only loop_write() writes
    expected = bytearray()
    mids = iter(range(1, 60_000))
    n_qos0 = 0
    for _ in range(200):
        r = rng.random()
        if r < 0.8:
            batch = [next(mids) for _ in range(rng.randint(1, 40))]
            c.ack_many(batch, 1)
            expected += pubacks(batch)
        elif r < 0.9 and not websocket:  # paho's own write path drops a packet sent as 0 bytes
            assert c.publish("t/q0", b"p" * rng.randint(0, 50), qos=0).rc == 0
            expected += c._out_packet[-1]["packet"]
            n_qos0 += 1
        else:
            mid = next(mids)
            c.ack(mid, 1)
            expected += pubacks([mid])
        for _ in range(rng.randint(0, 3)):
            c.loop_write()
    for _ in range(100_000):
        if not c._out_packet:
            break
        c.loop_write()
    assert bytes(sock.sent) == bytes(expected)
    assert len(published) == n_qos0  # paho's completion handling ran for every QoS 0 PUBLISH


def test_ack_many_is_one_wakeup_and_one_send() -> None:
    sock = FakeSock([])
    c, _ = fake_client("5", sock, manual_ack=True)
    r, w = socket.socketpair()
    with r, w:
        r.setblocking(False)
        w.setblocking(False)
        c._sockpairR, c._sockpairW = r, w
        c._thread = threading.current_thread()
        c.ack_many(range(1, 501), 1)
        c.ack_many([7], 2)
        assert len(r.recv(10_000)) == 2
    c._thread = None
    c.loop_write()
    assert sock.sends == 1
    assert bytes(sock.sent) == pubacks(list(range(1, 501))) + struct.pack("!BBH", 0x70, 2, 7)


def test_ack_many_checks_before_queueing() -> None:
    auto, _ = fake_client("5", FakeSock([]))
    auto.ack_many([1, 2], 1)
    assert not auto._out_packet  # like ack(): nothing to do without manual_ack
    c, _ = fake_client("5", FakeSock([]), manual_ack=True)
    c._thread = threading.current_thread()
    with pytest.raises(struct.error):
        c.ack_many([1, 70_000], 1)
    c.ack_many([1], 0)
    assert not c._out_packet


def test_packets_queued_by_callbacks_go_out_in_one_send() -> None:
    data = b"".join(publish_packet("t", b"m", mid, 1, True) for mid in range(1, 101))
    sock = FakeSock([data])
    c, _ = fake_client("5", sock, manual_ack=True)
    r, w = socket.socketpair()
    with r, w:
        r.setblocking(False)
        c._sockpairR, c._sockpairW = r, w
        c._thread = threading.current_thread()  # we are the network thread
        c.on_message = lambda cl, u, m: cl.ack_many([m.mid], 1)
        assert c.loop_read() == mqtt.MQTT_ERR_SUCCESS
        with pytest.raises(BlockingIOError):
            r.recv(1)  # no wake-up byte: the network thread wrote them itself
    assert sock.sends == 1
    assert bytes(sock.sent) == pubacks(list(range(1, 101)))


def test_import_fails_loudly_when_paho_lacks_a_private_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(mqtt.Client, "_packet_read")
    with pytest.raises(ImportError, match=r"paho-mqtt 2\.\d.*Client\._packet_read"):
        gateway.mqtt_client._check_paho()


def _raw_publish(
    header: int, topic: bytes, mid: int | None, props: bytes | None, payload: bytes
) -> bytearray:
    """A PUBLISH packet after its fixed header, as paho's reader hands it on."""
    body = struct.pack("!H", len(topic)) + topic
    if mid is not None:
        body += struct.pack("!H", mid)
    if props is not None:
        body += props
    return bytearray(body + payload)


def _handled(client: mqtt.Client, header: int, packet: bytearray) -> tuple[Any, ...]:
    """What ``client`` makes of one PUBLISH: the message's fields, the return code, and the
    bytes it queued (an automatic PUBACK)."""
    got: list[mqtt.MQTTMessage] = []
    client.on_message = lambda cl, u, m: got.append(m)
    client._in_packet = {"command": header, "packet": packet}
    sock = FakeSock([])
    client._sock = sock  # type: ignore[assignment]
    client._state = _ConnectionState.MQTT_CS_CONNECTED
    try:
        rc = client._handle_publish()
    except Exception as exc:  # paho reports a malformed packet by raising
        return ("raised", type(exc).__name__)
    queued = bytes(sock.sent) + b"".join(bytes(p["packet"]) for p in client._out_packet)
    fields = [
        (m._topic, m.payload, m.mid, m.qos, m.dup, m.retain,
         None if m.properties is None else m.properties.json())
        for m in got
    ]  # fmt: skip
    return rc, fields, queued


_USER_PROPERTY = bytes([13, 38, 0, 3]) + b"key" + bytes([0, 5]) + b"value"
_CONTENT_TYPE = bytes([6, 3, 0, 3]) + b"a/b"
_PUBLISH_CASES = [
    (0x32, b"a/b", 7, b"\x00", b"{}"),  # QoS 1
    (0x30, b"a/b", None, b"\x00", b"zero"),  # QoS 0
    (0x3B, b"r/t", 9, b"\x00", b"dup retain"),  # QoS 1, DUP and RETAIN
    (0x32, b"a/b", 1, b"\x00", b""),  # empty payload
    (0x32, "temp/\u00e9".encode(), 65535, b"\x00", b"x" * 70_000),
    (0x32, b"a/b", 5, _USER_PROPERTY, b"props"),  # properties: paho's path
    (0x32, b"a/b", 5, _CONTENT_TYPE, b"props"),
    (0x34, b"q/2", 3, b"\x00", b"qos2"),  # QoS 2: paho's path
    (0x32, b"", 4, b"\x00", b"empty topic"),
    (0x32, b"a/b", None, None, b""),  # truncated: no packet id
]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize("manual_ack", [False, True])
@pytest.mark.parametrize(("header", "topic", "mid", "props", "payload"), _PUBLISH_CASES)
def test_publish_handling_matches_paho(
    protocol: str,
    manual_ack: bool,
    header: int,
    topic: bytes,
    mid: int | None,
    props: bytes | None,
    payload: bytes,
) -> None:
    v5 = protocol == "5"
    packet = _raw_publish(header, topic, mid, props if v5 else None, payload)
    made = []
    for cls in (mqtt.Client, BufferedClient):
        client = cls(CallbackAPIVersion.VERSION2, protocol=PROTOCOLS[protocol],
                     manual_ack=manual_ack)  # fmt: skip
        made.append(_handled(client, header, bytearray(packet)))
    assert made[1] == made[0]
    if header in (0x30, 0x32) and props == b"\x00" and topic and mid is not None:
        assert made[1][1], "a well-formed PUBLISH reaches on_message"


def test_publish_fast_path_properties_are_separate_objects() -> None:
    client = BufferedClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    got: list[mqtt.MQTTMessage] = []
    client.on_message = lambda cl, u, m: got.append(m)
    client._sock = FakeSock([])  # type: ignore[assignment]
    for mid in (1, 2):
        client._in_packet = {"command": 0x32, "packet": _raw_publish(0x32, b"t", mid, b"\x00", b"")}
        client._handle_publish()
    first, second = (m.properties for m in got)
    first.ContentType = "text/plain"
    assert first.json() == {"ContentType": "text/plain"}
    assert second.json() == {} and second.isEmpty()
    assert second.pack() == b"\x00"


# -- real mosquitto -----------------------------------------------------------------------------


class TlsMosquitto(MosquittoBroker):
    """The project's mosquitto with a second, TLS listener on ``tls_port``."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir=workdir)
        self.tls_port = free_port()
        self.cert = workdir / "cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext",
             "subjectAltName=IP:127.0.0.1", "-keyout", str(workdir / "key.pem"),
             "-out", str(self.cert)],
            check=True, capture_output=True,
        )  # fmt: skip

    def config_text(self) -> str:
        return super().config_text() + (
            f"listener {self.tls_port} {self.host}\n"
            f"certfile {self.cert}\nkeyfile {self.workdir / 'key.pem'}\n"
        )


@pytest.fixture
def tls_mosquitto(tmp_path: Path) -> Iterator[TlsMosquitto]:
    broker = TlsMosquitto(tmp_path / "tls-broker")
    broker.start()
    try:
        wait_until(lambda: _listening(broker.tls_port), 10, "the TLS listener")
        yield broker
    finally:
        broker.cleanup()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def make_client(
    cls: type[Client],
    port: int,
    protocol: str,
    client_id: str,
    *,
    manual_ack: bool = False,
    cafile: Path | None = None,
    keepalive: int = 60,
) -> Client:
    """A client of a persistent session (created on first use), connected but not looping."""
    v5 = protocol == "5"
    c = cls(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=PROTOCOLS[protocol],
        clean_session=None if v5 else False,
        manual_ack=manual_ack,
    )
    if cafile is not None:
        c.tls_set(ca_certs=str(cafile))
    c.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]  # paho takes float seconds
    if v5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        props.ReceiveMaximum = 20_000
        c.connect("127.0.0.1", port, keepalive, clean_start=False, properties=props)
    else:
        c.connect("127.0.0.1", port, keepalive)
    return c


def subscribe_session(port: int, protocol: str, client_id: str, topic: str) -> None:
    c = make_client(mqtt.Client, port, protocol, client_id)
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    c.loop_start()
    c.subscribe(topic, qos=1)
    assert subscribed.wait(10)
    c.disconnect()
    c.loop_stop()


def payloads(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, 150, 300, 400, 1000]
    return [
        b"%08d|" % i + rng.randbytes(rng.choice(sizes) if i % 500 else 150_000) for i in range(n)
    ]


def receive_all(
    client: BufferedClient, port: int, topic: str, n: int, acks: str, drop_at: int = -1
) -> collections.Counter[bytes]:
    """Loop ``client`` until it has ``n`` distinct messages, then disconnect it cleanly.

    ``acks``: "auto" (paho acks), "loop" (``ack_many`` from this thread, in batches) or
    "callback" (``ack_many`` from ``on_message``). ``drop_at``: after that many messages, cut
    the connection under paho (it reconnects). A QoS 1 marker published after the last message
    is received before the disconnect, so that paho has queued every automatic PUBACK by then.
    """
    got: collections.Counter[bytes] = collections.Counter()
    pending: collections.deque[int] = collections.deque()
    wake, marker_seen = threading.Event(), threading.Event()
    total = 0

    def on_message(c: mqtt.Client, userdata: Any, m: mqtt.MQTTMessage) -> None:
        nonlocal total
        if m.payload == b"marker":
            marker_seen.set()
            wake.set()
        else:
            got[bytes(m.payload[:9])] += 1
            total += 1
            if total == drop_at:
                c.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
            if len(got) == n and total == sum(got.values()):
                wake.set()
        if acks == "callback":
            client.ack_many([m.mid], 1)
        elif acks == "loop":
            pending.append(m.mid)
            wake.set()

    client.on_message = on_message
    client.loop_start()
    deadline = time.monotonic() + 60
    marker_sent = False
    while not marker_seen.is_set():
        assert time.monotonic() < deadline, f"received {len(got)} of {n}"
        wake.wait(5)
        wake.clear()
        if pending:
            client.ack_many([pending.popleft() for _ in range(len(pending))], 1)
        if len(got) == n and not marker_sent:
            marker_sent = True
            with Publisher(port) as pub:
                pub.publish([(topic, b"marker")])
    if pending:
        client.ack_many(list(pending), 1)
    # A round trip after the acks: mosquitto reads one packet per wake-up, and a session
    # taken over by the next connection drops what the old one had not read yet.
    synced = threading.Event()
    client.on_unsubscribe = lambda *a: synced.set()
    client.unsubscribe("sync/none")
    assert synced.wait(10)
    client.disconnect()
    client.loop_stop()
    return got


def redelivered(port: int, protocol: str, client_id: str, topic: str) -> list[bytes]:
    """Messages the broker still holds for the session (queued ones come before a new one)."""
    got: list[bytes] = []
    connected, checked = threading.Event(), threading.Event()

    def on_message(c: mqtt.Client, userdata: Any, m: mqtt.MQTTMessage) -> None:
        if m.payload == b"check":
            checked.set()
        elif m.payload != b"marker":
            got.append(bytes(m.payload))

    c = make_client(mqtt.Client, port, protocol, client_id)
    c.on_connect = lambda *a: connected.set()
    c.on_message = on_message
    c.loop_start()
    assert connected.wait(10)
    with Publisher(port) as pub:
        pub.publish([(topic, b"check")])
    assert checked.wait(10)
    c.disconnect()
    c.loop_stop()
    return got


@pytest.mark.integration
@pytest.mark.parametrize(
    ("transport", "protocol", "acks"),
    [
        ("tcp", "5", "loop"),
        ("tcp", "3.1.1", "auto"),
        ("tcp", "3.1.1", "callback"),
        ("tls", "5", "auto"),
        ("tls", "5", "callback"),
        ("tls", "3.1.1", "loop"),
    ],
)
def test_every_message_once_and_every_ack_reaches_the_broker(
    tls_mosquitto: TlsMosquitto, transport: str, protocol: str, acks: str
) -> None:
    port = tls_mosquitto.port
    cid, topic = f"drain-{protocol}-{acks}", "dev/drain"
    subscribe_session(port, protocol, cid, topic)
    sent = payloads(2000, seed=len(cid))
    with Publisher(port) as pub:
        pub.publish((topic, p) for p in sent)
    tls = transport == "tls"
    c = make_client(
        BufferedClient,
        tls_mosquitto.tls_port if tls else port,
        protocol,
        cid,
        manual_ack=acks != "auto",
        cafile=tls_mosquitto.cert if tls else None,
    )
    got = receive_all(c, port, topic, len(sent), acks)
    assert set(got) == {p[:9] for p in sent}
    assert max(got.values()) == 1
    assert redelivered(port, protocol, cid, topic) == []


@pytest.mark.integration
@pytest.mark.parametrize(("protocol", "acks"), [("5", "loop"), ("3.1.1", "auto")])
def test_connection_lost_mid_stream_loses_nothing(
    mosquitto: MosquittoBroker, protocol: str, acks: str
) -> None:
    cid, topic = f"drop-{protocol}", "dev/drop"
    subscribe_session(mosquitto.port, protocol, cid, topic)
    sent = payloads(6000, seed=5)
    with Publisher(mosquitto.port) as pub:
        pub.publish((topic, p) for p in sent)
    c = make_client(BufferedClient, mosquitto.port, protocol, cid, manual_ack=acks != "auto")
    connects: list[object] = []
    c.on_connect = lambda *a: connects.append(a)
    got = receive_all(c, mosquitto.port, topic, len(sent), acks, drop_at=2000)
    assert len(connects) >= 2
    assert set(got) == {p[:9] for p in sent}  # QoS 1: duplicates allowed, nothing lost
    assert redelivered(mosquitto.port, protocol, cid, topic) == []


@pytest.mark.integration
def test_idle_tls_connection_keeps_alive(tls_mosquitto: TlsMosquitto) -> None:
    c = BufferedClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(tls_mosquitto.cert))
    pingresps: list[str] = []
    lost: list[object] = []
    two_pings = threading.Event()

    def on_log(cl: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        if text.startswith("Received PINGRESP"):
            pingresps.append(text)
            if len(pingresps) == 2:
                two_pings.set()

    c.on_log = on_log
    c.on_disconnect = lambda *a: lost.append(a)
    c.connect("127.0.0.1", tls_mosquitto.tls_port, keepalive=1)
    c.loop_start()
    try:
        assert two_pings.wait(10)  # > 1.5 keepalives: the broker would have dropped us
        assert c.is_connected()
        assert lost == []
    finally:
        c.disconnect()
        c.loop_stop()
