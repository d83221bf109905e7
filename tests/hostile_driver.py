"""Runs ``validate``, ``plan`` and ``apply --yes`` on one project in one process, for
tests/test_hostile.py, and prints what happened as JSON: each command's exit code, output and
unexpected exception, and how many HTTP requests were sent.

Run as ``python -m tests.hostile_driver ROOT [ARGS...]`` under a timeout: a command that hangs
fails the case instead of the suite. The address space is capped, so runaway memory is a
``MemoryError`` here, not a machine out of memory.
"""

from __future__ import annotations

import json
import resource
import sys
import traceback

import httpx
from click.testing import CliRunner

MEMORY_CAP = 3 << 30  # bytes of address space


def main(argv: list[str]) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    from kmigrate.cli import main as cli

    sent: list[str] = []
    original = httpx.Client.send

    def counting(self: httpx.Client, request: httpx.Request, **kwargs: object) -> httpx.Response:
        sent.append(f"{request.method} {request.url}")
        return original(self, request, **kwargs)  # type: ignore[arg-type]

    httpx.Client.send = counting  # type: ignore[method-assign]
    root, *args = argv
    results = []
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
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
