"""A worker of the expression sandbox (CEL, Jinja2): `python -m kalcifer_common.sandbox.worker FD MEMORY_MB PARENT_PID`.

It limits its own address space (an expression that builds huge values dies here, not in the engine), asks the
kernel to kill it when the engine dies, then answers frames on the inherited socket until the engine closes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import socket
import sys

import orjson

from kalcifer_common.sandbox.errors import ExpressionFailed
from kalcifer_common.sandbox.evaluation import evaluate_here
from kalcifer_common.sandbox.protocol import CEL, HEADER, JINJA_CHECK, READY, frame
from kalcifer_common.sandbox.templating import render_here, syntax_problems_here

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # Linux only; elsewhere the closed socket ends the loop
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the engine died before the line above took effect
        sys.exit(0)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def serve(sock: socket.socket) -> None:
    """Answer requests until the socket closes."""
    sock.sendall(frame(READY))
    while (header := _read_exactly(sock, HEADER.size)) is not None:
        body = _read_exactly(sock, HEADER.unpack(header)[0])
        if body is None:
            return
        kind, source, variables = orjson.loads(body)
        try:
            if kind == CEL:
                value = evaluate_here(source, variables)
            elif kind == JINJA_CHECK:
                value = syntax_problems_here(source)
            else:
                value = render_here(source, variables)
            answer = orjson.dumps([True, value])
        except ExpressionFailed as error:
            answer = orjson.dumps([False, str(error)])
        except MemoryError:
            sys.exit(3)  # the engine reports it as a runaway; a fresh worker takes this one's place
        sock.sendall(frame(answer))


def main() -> None:
    """Entry point; arguments come from `ExpressionSandbox` only."""
    fd, memory_mb, parent_pid = (int(arg) for arg in sys.argv[1:4])
    _die_with_parent(parent_pid)
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal reaches the whole group; the engine decides
    with socket.socket(fileno=fd) as sock:
        serve(sock)


if __name__ == "__main__":
    main()
