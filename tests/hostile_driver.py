"""Runs ``validate``, ``plan`` and ``apply --yes`` on one project in one child process, for
tests/test_hostile.py: each command's exit code, output and unexpected exception, and the HTTP
requests sent.

The child is forked from a server process that has kmigrate imported already
(multiprocessing's forkserver), so a case costs its own work, not an interpreter's start-up.
It runs under a timeout: a command that hangs fails the case instead of the suite. Its address
space is capped, so runaway memory is a ``MemoryError`` there, not a machine out of memory.
Host names resolve from the case's own table only (``hosts``; any other name does not resolve),
so the plain-http rule meets the same addresses on every machine and no lookup leaves it.

``python -m tests.hostile_driver ROOT [ARGS...]`` runs one project the same way and prints the
results as JSON (for a look at one case by hand).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import socket
import sys
import traceback
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from kmigrate.cli import main as cli

from . import preload  # noqa: F401  (the commands' modules, loaded once in the fork server)

MEMORY_CAP = 3 << 30  # bytes of address space
REPO = Path(__file__).resolve().parents[1]
TOKEN = "hostile-suite-token"

# One fork server per test process: it imports this module (and so kmigrate) once, then forks.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["tests.hostile_driver"])


def run_commands(
    root: str, args: list[str], hosts: Mapping[str, Sequence[str]] | None = None
) -> list[dict[str, Any]]:
    """The three commands in turn, in this process, counting the requests httpx sends; a host
    name resolves to its addresses in ``hosts``, any other name to none."""
    sent: list[str] = []
    original = httpx.Client.send
    original_getaddrinfo = socket.getaddrinfo
    table = dict(hosts or {})

    def counting(self: httpx.Client, request: httpx.Request, **kwargs: object) -> httpx.Response:
        sent.append(f"{request.method} {request.url}")
        return original(self, request, **kwargs)  # type: ignore[arg-type]

    def from_table(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            item for address in table[host] for item in original_getaddrinfo(address, port, *args, **kwargs)
        ]

    httpx.Client.send = counting  # type: ignore[method-assign]
    socket.getaddrinfo = from_table
    results = []
    try:
        for command in (["validate"], ["plan"], ["apply", "--yes"]):
            result = CliRunner().invoke(cli, ["-C", root, *args, *command])
            unexpected = None
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                unexpected = "".join(traceback.format_exception(result.exception))
            results.append(
                {
                    "command": command[0],
                    "exit": result.exit_code,
                    "output": result.output,
                    "exception": unexpected,
                    "sent": list(sent),
                }
            )
    finally:
        httpx.Client.send = original  # type: ignore[method-assign]
        socket.getaddrinfo = original_getaddrinfo
    return results


def _isolate() -> None:
    """What a fresh child of the repository would see: no caller's credentials, the suite's
    token, the repository as the working folder, and the memory cap."""
    for name in [n for n in os.environ if n.startswith(("KINTONE_", "KMIGRATE_"))]:
        del os.environ[name]
    os.environ["KINTONE_API_TOKEN"] = TOKEN
    os.chdir(REPO)
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _child(conn: Connection, root: str, args: list[str], hosts: Mapping[str, Sequence[str]]) -> None:
    _isolate()
    try:
        conn.send(("ok", run_commands(root, args, hosts)))
    except BaseException:  # noqa: BLE001 - whatever escaped goes back to the test as text
        conn.send(("crashed", traceback.format_exc()))
    finally:
        conn.close()


def run_case(
    root: str, args: list[str], *, timeout: float, hosts: Mapping[str, Sequence[str]] | None = None
) -> list[dict[str, Any]]:
    """:func:`run_commands` in a forked child under the memory cap; ``AssertionError`` when the
    child crashes, dies or is still running after ``timeout`` seconds (then it is killed)."""
    receive, send = _CONTEXT.Pipe(duplex=False)
    child = _CONTEXT.Process(target=_child, args=(send, root, args, dict(hosts or {})), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(timeout):
            raise AssertionError(f"the commands did not finish within {timeout} s")
        try:
            status, payload = receive.recv()
        except EOFError:
            child.join(10)
            raise AssertionError(f"the child died without an answer (exit code {child.exitcode})") from None
        if status != "ok":
            raise AssertionError(f"the child crashed:\n{payload[-3000:]}")
        return payload
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join(10)


def main(argv: list[str]) -> None:
    root, *args = argv
    _isolate()
    print(json.dumps(run_commands(root, args)))


if __name__ == "__main__":
    main(sys.argv[1:])
