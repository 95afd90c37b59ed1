"""The network-namespace harness (tests/netns.py) itself: hosts reach the machine only through
the bridge, and a process can build one network after another (the multi-host tests do)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests import netns

pytestmark = pytest.mark.e2e

_CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 10)"


@pytest.fixture(autouse=True)
def _namespaces() -> None:
    why = netns.unavailable()
    if why:
        pytest.skip(f"needs network namespaces: {why}")


def test_networks_one_after_another_each_reach_the_gateway() -> None:
    gateways = []
    for _ in range(2):
        with netns.Network() as network, socket.socket() as server:
            host = network.add_host()
            server.bind((network.gateway, 0))
            server.listen()
            port = server.getsockname()[1]
            reached = subprocess.run(host.argv([sys.executable, "-c", _CONNECT, network.gateway,
                                                str(port)]), capture_output=True, timeout=60)
            assert reached.returncode == 0, reached.stderr
            # The host's own loopback is its own: the machine's 127.0.0.1 is not reachable.
            with socket.socket() as local:
                local.bind(("127.0.0.1", 0))
                local.listen()
                blocked = subprocess.run(
                    host.argv([sys.executable, "-c", _CONNECT, "127.0.0.1",
                               str(local.getsockname()[1])]), capture_output=True, timeout=60)
                assert blocked.returncode != 0
            gateways.append(network.gateway)
    assert len(gateways) == 2
