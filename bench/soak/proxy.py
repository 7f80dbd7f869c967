"""A TCP proxy that can take a server away and bring it back on the same port.

Stopping moto's server would lose its buckets (it keeps them in memory), so the soak puts
this proxy between the service and moto and takes *the proxy* down: the listening socket
closes (new connections are refused) and every open connection is reset, which is what a
client sees when S3 becomes unreachable. :meth:`up` listens again on the same port.

The soak runs it as a process of its own (``python -m bench.soak.proxy --upstream PORT``:
SIGUSR1 takes it down, SIGUSR2 brings it back, and it prints ``listening PORT``, ``down``
and ``up``), so that copying S3 traffic never slows the simulator that feeds the service;
:class:`ProxyProcess` drives it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ProxyProcess", "TcpProxy", "main"]

_ROOT = str(Path(__file__).resolve().parents[2])


class TcpProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream_port = upstream_port
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    @property
    def is_up(self) -> bool:
        return self._server is not None

    async def up(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """Refuse new connections and reset the open ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            _reset(writer)
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}
            for w in (writer, up_writer):
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, asyncio.IncompleteReadError):
        _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a vanished peer would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    writer.transport.abort()


class ProxyProcess:
    """A :class:`TcpProxy` in a child process, driven by signals."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.is_up = False
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.soak.proxy", "--upstream", str(self.upstream_port),
            stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL, cwd=_ROOT,
        )  # fmt: skip
        line = await self._line()
        self.port = int(line.split()[1])
        self.is_up = True

    async def down(self) -> None:
        await self._signal(signal.SIGUSR1, "down")
        self.is_up = False

    async def up(self) -> None:
        await self._signal(signal.SIGUSR2, "up")
        self.is_up = True

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await proc.wait()

    async def _signal(self, sig: int, answer: str) -> None:
        assert self._proc is not None
        self._proc.send_signal(sig)
        line = await self._line()
        if line != answer:
            raise RuntimeError(f"proxy answered {line!r}, expected {answer!r}")

    async def _line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        raw = await asyncio.wait_for(self._proc.stdout.readline(), 10.0)
        if not raw:
            raise RuntimeError("the proxy process exited")
        return raw.decode().strip()


async def _serve(upstream: int) -> None:
    proxy = TcpProxy(upstream)
    await proxy.up()
    print(f"listening {proxy.port}", flush=True)
    loop = asyncio.get_running_loop()
    wanted: asyncio.Queue[bool] = asyncio.Queue()
    loop.add_signal_handler(signal.SIGUSR1, wanted.put_nowait, False)
    loop.add_signal_handler(signal.SIGUSR2, wanted.put_nowait, True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    getter = asyncio.ensure_future(wanted.get())
    stopper = asyncio.ensure_future(stop.wait())
    while not stop.is_set():
        await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            if getter.result():
                await proxy.up()
                print("up", flush=True)
            else:
                await proxy.down()
                print("down", flush=True)
            getter = asyncio.ensure_future(wanted.get())
    getter.cancel()
    await proxy.down()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak.proxy")
    p.add_argument("--upstream", type=int, required=True, help="the port to forward to")
    asyncio.run(_serve(p.parse_args(argv).upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
