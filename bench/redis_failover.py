"""A managed-Redis failover on one machine: two real ``redis-servers`` and a name that moves.

::

    with MovingName() as name, RedisFailoverPair() as pair:
        name.point(pair.primary.host)           # the "primary endpoint"
        url = f"redis://{name.name}:{pair.port}/0"
        ...
        pair.failover(name)                     # replica promoted, old primary demoted, name moved

The two servers listen on the same port on two loopback addresses (``127.0.0.2`` and
``127.0.0.3``; Linux routes all of 127/8 to the loopback interface), the second one a
replica of the first. The name is a line of ``/etc/hosts``, which glibc's resolver reads
again on every lookup (``getaddrinfo``, so every new connection), as a managed endpoint's
DNS record with a short TTL. :class:`MovingName` edits the file only under an exclusive lock,
only ever touches its own line (a name unique to the process) and the lines of such names
whose process is gone (a run killed before its clean-up), keeps every other byte where it
was (so that concurrent lookups of other names never see a torn file), and removes its
line on exit: the file is then byte for byte what it was.

:meth:`RedisFailoverPair.failover` does what ElastiCache and MemoryDB do for a planned
failover: pause writes on the primary (``CLIENT PAUSE WRITE``), wait until the replica has
every write, promote it (``REPLICAOF NO ONE``), make the old primary its replica, move the
name, unpause. Writes held by the pause are then answered ``READONLY`` by the demoted node.
With ``coordinated=False`` it skips the pause and the catch-up (the bare procedure): writes
the old primary accepts between the promotion and its demotion are lost with its dataset,
as in any unplanned Redis failover (replication is asynchronous).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from polygon_testing.local_redis import RedisServerProcess, free_port

__all__ = ["HOSTS_FILE", "MovingName", "RedisFailoverPair", "hosts_file_writable"]

HOSTS_FILE = Path("/etc/hosts")
_LOCK_FILE = Path("/tmp/polygon-sink-hosts.lock")
_SUFFIX = ".polygon-sink.test"
_serial = itertools.count(1)
_OURS = re.compile(rb" [a-z-]+-(\d+)-\d+" + re.escape(_SUFFIX.encode()) + rb"\n?$")


def hosts_file_writable(path: Path = HOSTS_FILE) -> bool:
    return os.access(path, os.W_OK)


def _stale(line: bytes) -> bool:
    """A line of a name of ours whose process is gone (a run killed before its clean-up)."""
    match = _OURS.search(line)
    if match is None:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class MovingName:
    """A host name of this process's own in the hosts file; :meth:`point` moves it."""

    def __init__(self, path: Path = HOSTS_FILE, label: str = "redis-primary") -> None:
        self.path = path
        self.name = f"{label}-{os.getpid()}-{next(_serial)}{_SUFFIX}"
        self.address: str | None = None
        self.moved_at: float | None = None
        """``time.monotonic()`` of the last :meth:`point`."""

    def point(self, address: str) -> None:
        """Make the name resolve to ``address`` (a loopback address) from now on."""
        if not address.startswith("127."):
            raise ValueError(f"only loopback addresses are used, not {address!r}")
        self._rewrite(f"{address} {self.name}\n".encode())
        self.address = address
        self.moved_at = time.monotonic()

    def remove(self) -> None:
        self._rewrite(b"")
        self.address = None

    def _rewrite(self, line: bytes) -> None:
        with _LOCK_FILE.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with self.path.open("r+b") as f:
                text = f.read()
                ours = f" {self.name}\n".encode()
                lines = text.splitlines(keepends=True)
                kept = b"".join(ln for ln in lines if not ln.endswith(ours) and not _stale(ln))
                if kept and not kept.endswith(b"\n"):
                    kept += b"\n"
                new = kept + line
                # Only the bytes after the first difference are written: the lines of
                # others stay in place for anyone reading the file at this moment.
                same = next(
                    (i for i, (a, b) in enumerate(zip(text, new, strict=False)) if a != b),
                    min(len(text), len(new)),
                )
                f.seek(same)
                f.write(new[same:])
                f.truncate(len(new))

    def __enter__(self) -> MovingName:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


class RedisFailoverPair:
    """A primary on 127.0.0.2 and its replica on 127.0.0.3, same port; roles swap on
    :meth:`failover`."""

    ADDRESSES = ("127.0.0.2", "127.0.0.3")

    def __init__(
        self,
        *,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        password: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        # A full resync starts at once (Redis 7 waits 5 s for more replicas by default).
        args = ("--repl-diskless-sync-delay", "0", *extra_args)
        if password is not None:
            args += ("--requirepass", password, "--masterauth", password)
        self.servers = [
            RedisServerProcess(self.port, host=host, extra_args=args) for host in self.ADDRESSES
        ]
        self.primary, self.replica = self.servers
        self.failovers = 0
        self._sets_at_move = 0
        self._moved_at = 0.0

    def client(self, server: RedisServerProcess, **options: Any) -> redis.Redis:
        return redis.Redis(
            host=server.host, port=self.port, password=self.password, socket_timeout=5, **options
        )

    def start(self) -> RedisFailoverPair:
        for server in self.servers:
            server.start()
        with self.client(self.replica) as replica:
            replica.execute_command("REPLICAOF", self.primary.host, str(self.port))
        self.wait_in_sync()
        return self

    def wait_in_sync(self, timeout_s: float = 15.0) -> None:
        """Until the replica's link is up and it has every write of the primary."""
        deadline = time.monotonic() + timeout_s
        with self.client(self.primary) as primary, self.client(self.replica) as replica:
            while True:
                info = replica.info("replication")
                offset = primary.info("replication")["master_repl_offset"]
                if info.get("master_link_status") == "up" and (
                    info.get("slave_repl_offset", -1) >= offset
                ):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica not in sync: {info}")
                time.sleep(0.01)

    def failover(self, name: MovingName | None = None, *, coordinated: bool = True) -> float:
        """Promote the replica, demote the primary, move ``name``; returns the
        ``time.monotonic()`` at which the name moved (or the demotion, without a name)."""
        old, new = self.primary, self.replica
        with self.client(old) as old_c, self.client(new) as new_c:
            if coordinated:
                old_c.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
                self.wait_in_sync()
            new_c.execute_command("REPLICAOF", "NO", "ONE")
            old_c.execute_command("REPLICAOF", new.host, str(self.port))
            # Replication into the new primary has stopped, and clients reach it only
            # through the name: every SET it executes from now on is a client's write.
            self._sets_at_move = self.set_calls(new)
            if name is not None:
                name.point(new.host)
            moved = time.monotonic()
            if coordinated:
                old_c.execute_command("CLIENT", "UNPAUSE")
        self.primary, self.replica = new, old
        self.failovers += 1
        self._moved_at = moved
        return moved

    def wait_first_write(self, timeout_s: float = 30.0, poll_s: float = 0.002) -> float:
        """Seconds from the last failover's name move to the first ``SET`` the new primary
        executed (``INFO commandstats``, polled every ``poll_s``)."""
        deadline = time.monotonic() + timeout_s
        while self.set_calls(self.primary) <= self._sets_at_move:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no write reached {self.primary} within {timeout_s} s")
            time.sleep(poll_s)
        return time.monotonic() - self._moved_at

    def set_calls(self, server: RedisServerProcess) -> int:
        """``SET`` commands the server has executed (``INFO commandstats``)."""
        with self.client(server) as c:
            stats = c.info("commandstats").get("cmdstat_set", {})
        return int(stats.get("calls", 0))

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> RedisFailoverPair:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
