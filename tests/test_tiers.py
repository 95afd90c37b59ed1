"""The test tiers hold: what starts a LocalFlow process is recognised (tests/conftest.py fails
such a test without the e2e mark), and `make test-fast` leaves out exactly the slow tiers."""

from __future__ import annotations

import re
import sys

import pytest

from tests import conftest
from tests.procs import REPO


@pytest.mark.parametrize("argv", [
    [sys.executable, "-m", "localflow.cli", "serve", "--addr", "127.0.0.1:1"],
    ["/usr/local/bin/localflow", "worker"],
    ["localflow", "migrate"],
    [sys.executable, "-m", "tests.schedule_proc", "db", "clock", "60"],
    [sys.executable, "bench/run.py", "--quick"],
    [sys.executable, "bench/soak.py"],
])
def test_localflow_processes_are_recognised(argv):
    assert conftest._is_localflow(argv)


@pytest.mark.parametrize("argv", [
    ["echo", "hi"], ["sh", "-c", "sleep 1"], [sys.executable, "-c", "print(1)"],
    ["/usr/bin/chromium", "--headless"], ["docker", "compose", "up"],
    ["echo", "tests.txt", "bench/x.py"], [sys.executable, "-c", "import localflow"],
])
def test_task_programs_are_not(argv):
    assert not conftest._is_localflow(argv)


def test_make_test_fast_leaves_out_the_slow_tiers():
    makefile = (REPO / "Makefile").read_text()
    rule = re.search(r"^test-fast:.*\n\t(.*)$", makefile, re.M).group(1)
    left_out = set(re.findall(r"not (\w+)", rule))
    assert left_out == set(conftest._SLOW_TIERS)
    declared = (REPO / "pyproject.toml").read_text()
    for tier in conftest._SLOW_TIERS:
        assert f'"{tier}:' in declared, f"marker {tier} is not declared in pyproject.toml"
