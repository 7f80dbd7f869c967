"""``free_port`` hands out ports the kernel will not give anyone else meanwhile."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.redis_servers import free_port


def ephemeral_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def test_ports_are_below_the_ephemeral_range_and_free_on_every_address() -> None:
    low, _high = ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert all(1024 < p < low for p in ports), ports
    assert len(set(ports)) > 40, "drawn at random, they rarely repeat"
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("0.0.0.0", port))
