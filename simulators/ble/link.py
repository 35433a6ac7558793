"""Virtual BLE links on Bumble: in-process for tests, over TCP for separate processes.

A :class:`VirtualLink` is a Bumble ``LocalLink`` that virtual controllers attach to. Every
virtual device (peripheral or the gateway's central) is a Bumble ``Device`` whose host talks
HCI to one :class:`PatchedController` on the link, either directly (in-process) or through an
HCI-over-TCP transport (:meth:`VirtualLink.serve_tcp` exposes one controller on a port, and the
other process attaches with ``tcp-client:HOST:PORT``).

Bumble objects bind to the event loop running when they are created: build links and devices
inside the loop that will use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from bumble import hci
from bumble.controller import Controller
from bumble.device import Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

__all__ = ["PatchedController", "VirtualLink", "open_hci_device"]

log = logging.getLogger(__name__)


class PatchedController(Controller):
    """A Bumble controller whose LE Create Connection Cancel really cancels.

    The stock controller answers the cancel with success but keeps the pending connection, so
    every later connect fails with COMMAND_DISALLOWED. Here the cancel clears it and reports an
    LE Connection Complete with status 0x02 (unknown connection identifier), as a real
    controller does, and a connect to an absent device fails within the host's timeout.
    """

    def on_hci_le_create_connection_cancel_command(
        self, _command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        pending = self.pending_le_connection
        self.pending_le_connection = None
        if pending is not None:
            loop_event = hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=pending.peer_address.address_type,
                peer_address=pending.peer_address,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            )
            # After the command's own Command Complete, as the HCI ordering requires.
            asyncio.get_running_loop().call_soon(self.send_hci_packet, loop_event)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


class VirtualLink:
    """A virtual radio: every controller attached to it hears every other.

    Use as ``async with VirtualLink() as link``; closing it closes the TCP servers it opened.
    """

    def __init__(self) -> None:
        self.link = LocalLink()  # type: ignore[no-untyped-call]
        self._transports: list[Transport] = []
        self._controllers: list[Controller] = []

    async def __aenter__(self) -> VirtualLink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def device(self, name: str, address: str) -> Device:
        """A Bumble device with its own controller on this link (not powered on yet).

        Args:
            name: The device's GAP name.
            address: Its random static address (``F0:00:00:00:00:01``).
        """
        controller = PatchedController(name, link=self.link, public_address=address)
        self._controllers.append(controller)
        return Device(
            name=name,
            address=hci.Address(address),
            host=Host(controller, AsyncPipeSink(controller)),
        )

    async def serve_tcp(self, host: str, port: int) -> int:
        """Expose one more controller on this link as HCI over TCP at ``host:port``.

        A process attaches to it with :func:`open_hci_device` (``tcp-client:HOST:PORT``).

        Returns:
            The port (useful with port 0).
        """
        spec = f"tcp-server:{'_' if host in ('', '0.0.0.0') else host}:{port}"
        transport = await open_transport(spec)
        self._transports.append(transport)
        controller = PatchedController(
            f"tcp-{port}",
            host_source=transport.source,
            host_sink=transport.sink,
            link=self.link,
        )
        self._controllers.append(controller)
        server: Any = getattr(transport, "server", None)
        if port == 0 and server is not None:
            return int(server.sockets[0].getsockname()[1])
        return port

    async def close(self) -> None:
        """Close the TCP transports."""
        for transport in self._transports:
            with contextlib.suppress(Exception):
                await transport.close()
            # Bumble's TCP server transport closes neither its server nor its client socket.
            peer = getattr(transport.sink, "transport", None)
            if peer is not None:
                peer.close()
            server: Any = getattr(transport, "server", None)
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await server.wait_closed()
        self._transports.clear()


async def open_hci_device(spec: str, name: str, address: str) -> tuple[Device, Transport]:
    """A Bumble device on an HCI transport (``tcp-client:127.0.0.1:9100``); not powered on.

    The caller closes the returned transport when done.
    """
    transport = await open_transport(spec)
    device = Device.with_hci(name, hci.Address(address), transport.source, transport.sink)
    return device, transport
