"""The socket ``orchestrate serve`` listens on: every connection accepted on it sends without Nagle's delay."""

from __future__ import annotations

import asyncio
import socket

from orchestration.cli.serve import _listen


def test_accepted_connections_have_tcp_nodelay() -> None:
    """A response written in pieces must not wait for the client's delayed ACK (~40 ms per kept-alive request)."""

    async def main() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listening = _listen("127.0.0.1", 0)
        server = await asyncio.start_server(connected, sock=listening)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", listening.getsockname()[1])
            try:
                return await asyncio.wait_for(accepted, 10)
            finally:
                writer.close()

    assert asyncio.run(main()) != 0
