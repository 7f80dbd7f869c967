"""A TCP proxy that can take a server away and bring it back on the same port.

Stopping moto's server would lose its buckets (it keeps them in memory), so the soak puts
this proxy between the service and moto and takes *the proxy* down: the listening socket
closes (new connections are refused) and every open connection is reset, which is what a
client sees when S3 becomes unreachable. :meth:`up` listens again on the same port.

:meth:`TcpProxy.silence` is the other fault, a NAT or load balancer dropping a flow: the
open connections stop forwarding (what arrives is read and thrown away, in both directions
or only client to server) but stay open, with no FIN and no RST; new connections are
forwarded as before. Tests use it in-process between a feed and the simulator.

The soak runs it as a process of its own (``python -m bench.soak.proxy --upstream PORT``:
SIGUSR1 takes it down, SIGUSR2 brings it back, SIGHUP silences the open connections, and it
prints ``listening PORT``, ``down``, ``up`` and ``silenced N``), so that copying S3 traffic
never slows the simulator that feeds the service; :class:`ProxyProcess` drives it.
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
from typing import Literal

__all__ = ["Direction", "ProxyProcess", "TcpProxy", "main"]

Direction = Literal["both", "upstream"]
"""What :meth:`TcpProxy.silence` stops: both directions, or only client to server (the
server's data still arrives, but nothing the client sends, pings included, gets through)."""

_ROOT = str(Path(__file__).resolve().parents[2])


class TcpProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream_port = upstream_port
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._links: set[_Link] = set()
        self.connections = 0
        self.most_open = 0
        """The most connections open at once so far (how many requests overlapped)."""

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

    def silence(self, direction: Direction = "both") -> int:
        """Stop forwarding on the open connections (``direction``) without closing them;
        returns how many were silenced. New connections are not affected."""
        for link in self._links:
            link.upstream_silent = True
            link.downstream_silent = link.downstream_silent or direction == "both"
        return len(self._links)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            _reset(writer)
            return
        link = _Link(writer, up_writer)
        self._writers |= {writer, up_writer}
        self._links.add(link)
        self.most_open = max(self.most_open, len(self._links))
        try:
            await asyncio.gather(
                _pipe(reader, up_writer, link, upstream=True),
                _pipe(up_reader, writer, link, upstream=False),
            )
        finally:
            self._links.discard(link)
            self._writers -= {writer, up_writer}
            for w in (writer, up_writer):
                w.close()


class _Link:
    """One proxied connection: its two writers and what is silenced."""

    __slots__ = ("client", "server", "upstream_silent", "downstream_silent")

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.upstream_silent = False
        self.downstream_silent = False

    def silent(self, upstream: bool) -> bool:
        return self.upstream_silent if upstream else self.downstream_silent

    def ended(self, upstream: bool) -> None:
        """One end of a silenced connection went away. The client never learns it from
        us: when the server's end goes, only that side is dropped (the client must find out
        by itself, as behind a NAT that forgot the flow); when the client's end goes, both."""
        self.server.transport.abort()
        if upstream:
            self.client.transport.abort()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, *, upstream: bool
) -> None:
    try:
        while data := await reader.read(256 * 1024):
            if link.silent(upstream):
                continue  # a dropped flow: the bytes vanish
            writer.write(data)
            await writer.drain()
        if link.silent(upstream):
            link.ended(upstream)
        elif writer.can_write_eof():
            writer.write_eof()
    except (OSError, asyncio.IncompleteReadError):
        if link.silent(upstream):
            link.ended(upstream)
        else:
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

    def __init__(self, upstream_port: int, *, nice: int = 0) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.is_up = False
        self._nice = ("nice", "-n", str(nice)) if nice else ()
        """The proxy runs at this niceness (above 0: it yields the CPU to the rest)."""
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self._nice,
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

    async def silence(self) -> int:
        """Silence the open connections (both directions); returns how many."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGHUP)
        line = await self._line()
        if not line.startswith("silenced "):
            raise RuntimeError(f"proxy answered {line!r}, expected 'silenced N'")
        return int(line.split()[1])

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
    loop.add_signal_handler(signal.SIGHUP, lambda: print(f"silenced {proxy.silence()}", flush=True))
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
