"""Several "hosts" on one machine: Linux network namespaces joined by a bridge.

Each Host is a network namespace with its own loopback and one veth link to a bridge in the
test's own namespace; the bridge holds the address the hosts reach the machine by. A process
started in a Host sees only its loopback and that link, so it can reach a server on the
machine only over TCP through the bridge: the topology of workers on other hosts. Everything
is made by the test and torn down after it; traffic never leaves this machine.

Needs root and iproute2 (`ip netns`); `unavailable()` says why not, for a skip.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

# Link-local, so the addresses can never be mistaken for, or routed to, a real network.
# 169.254.169.0/24 is left alone: cloud metadata services live there.
# A tuple, not subnets()'s generator: that one is spent by the first Network of a process.
_SUBNETS = tuple(ipaddress.ip_network("169.254.0.0/16").subnets(new_prefix=24))
_METADATA = ipaddress.ip_network("169.254.169.0/24")


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def unavailable() -> str | None:
    """Why this machine cannot make network namespaces, or None if it can."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = f"lfprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"cannot make a network namespace: {exc}"
    _ip("netns", "del", probe)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 169.254.0.0/16 that no route on this machine already covers."""
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, timeout=30
    ).stdout
    used = [
        ipaddress.ip_network(word, strict=False)
        for line in routes.splitlines()
        for word in line.split()[:1]
        if word[:1].isdigit()
    ]
    # Random start, so two test runs at once pick different subnets.
    candidates = [s for s in list(_SUBNETS)[1:-1] if s != _METADATA]
    start = secrets.randbelow(len(candidates))
    for subnet in candidates[start:] + candidates[:start]:
        if not any(subnet.overlaps(u) for u in used):
            return subnet
    raise RuntimeError("no free /24 in 169.254.0.0/16")


@dataclass
class Host:
    name: str  # the namespace
    address: str  # its address on the bridge

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


@dataclass
class Network:
    """A bridge on this machine and hosts attached to it. Use as a context manager."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: list[Host] = field(default_factory=list)
    gateway: str = ""  # the machine's address on the bridge: where hosts reach its servers
    _subnet: ipaddress.IPv4Network | None = None

    @property
    def bridge(self) -> str:
        return f"lfbr{self.tag}"

    def __enter__(self) -> Network:
        self._subnet = _free_subnet()
        self.gateway = str(self._subnet.network_address + 1)
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def add_host(self) -> Host:
        assert self._subnet is not None, "use Network as a context manager"
        index = len(self.hosts) + 1
        name = f"lf{self.tag}h{index}"
        address = str(self._subnet.network_address + 1 + index)
        outside, inside = f"lf{self.tag}o{index}", f"lf{self.tag}i{index}"
        host = Host(name, address)
        self.hosts.append(host)  # before anything can fail, so __exit__ removes it
        _ip("netns", "add", name)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        _ip("link", "set", inside, "netns", name)
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", inside)
        _ip("-n", name, "link", "set", inside, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        return host

    def __exit__(self, *exc: object) -> None:
        # Deleting a namespace deletes its end of the veth, and with it the other end.
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
        self.hosts.clear()
