"""The upstream stub of ``bench_service.py``: a payment gateway that accepts every charge.

    python benchmarks/upstream.py PORT

A minimal HTTP/1.1 server on 127.0.0.1 (asyncio, keep-alive, ``Content-Length`` bodies only) so that it takes as
little as possible of the CPU the measured service competes for. Every ``POST`` is answered ``200`` with a small
JSON document; anything else gets ``404``. It stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from payloads import GATEWAY_ANSWER

_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(GATEWAY_ANSWER),
    GATEWAY_ANSWER,
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


class _Gateway(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self._buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            end = head_end + 4 + length
            if len(self._buffer) < end:
                return
            self._buffer = self._buffer[end:]
            assert self._transport is not None
            self._transport.write(_OK if head.startswith("POST ") else _NOT_FOUND)


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Gateway, "127.0.0.1", port, backlog=256)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    loop.add_signal_handler(signal.SIGINT, stop.set_result, None)
    async with server:
        await stop


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
