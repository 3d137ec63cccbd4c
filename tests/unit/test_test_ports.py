"""The test harness's ports (tests/support/processes.py): never handed out twice by one process, from a block
below the kernel's ephemeral range, and a suite can tell whether the process it started is the one listening."""

from __future__ import annotations

import os
import socket

from tests.support.processes import free_port, serves_port


def test_ports_are_never_handed_out_twice_and_stay_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= port < 32768 for port in ports)


def test_only_the_process_listening_on_a_port_serves_it() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert serves_port(os.getpid(), port)
        assert not serves_port(os.getppid(), port)
    assert not serves_port(os.getpid(), port)
