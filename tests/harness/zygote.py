"""kmigrate's processes for the harness, forked from one that has imported kmigrate already.

Each `kmigrate apply` and `kmigrate sandbox serve` the harness starts is a process of its own
(its pid, its journal, its sockets; the served sandbox SIGKILLs it for real), but a fresh
interpreter spends ~0.4 s of CPU importing kmigrate before doing anything: at CI size that was
most of the harness's CPU. So this module, run as ``python -m tests.harness.zygote``, imports
kmigrate once and forks every command from there. It has one thread, so a fork never inherits
a lock another thread held. A child resets the signals, points stdout and stderr at its
output file, takes its own environment, runs the command line and leaves the way any
`kmigrate` process does (``sys.exit``: atexit handlers and thread joins included).

One JSON line each way, on the zygote's stdin and stdout::

    -> {"argv": [...], "env": {...}, "output": "PATH"}   a command; its stdout and stderr to PATH
    <- {"started": PID}
    <- {"exited": PID, "code": N}                         N < 0: killed by signal -N (as Popen)

When its stdin closes it SIGKILLs what is still running, reaps it and exits.
``--records-per-call N`` makes every plan of its commands put N records in a write call
(tests/projects.py, ``small_calls``): a suite about bulks, not Kintone's sizes.
"""

from __future__ import annotations

import gc
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import tests.preload  # noqa: F401  (what the commands import, before any fork)
from kmigrate.cli import main as cli

REPO = Path(__file__).resolve().parents[2]


# ---- the zygote --------------------------------------------------------------------------------


def main() -> int:
    """The zygote's loop; in a forked child, the child's command (its exit code)."""
    if sys.argv[1:2] == ["--records-per-call"]:
        from tests.projects import small_limits

        for module, limits in small_limits(int(sys.argv[2])):
            module.Limits = limits  # type: ignore[attr-defined]
    # What is imported stays put: the children's collections never walk (and so copy) it.
    gc.freeze()
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # the wakeup fd does the work
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    running: set[int] = set()
    pending = b""

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message).encode() + b"\n")

    def reap() -> None:
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            running.discard(pid)
            reply({"exited": pid, "code": os.waitstatus_to_exitcode(status)})

    while True:
        for key, _ in selector.select():
            if key.fd == wake_r:
                while True:
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        break
                continue
            data = os.read(0, 1 << 16)
            if not data:  # the harness is gone: nothing of ours outlives it
                for pid in running:
                    os.kill(pid, signal.SIGKILL)
                while running:
                    running.discard(os.waitpid(-1, 0)[0])
                return 0
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    for fd in (wake_r, wake_w, replies.fileno()):
                        os.close(fd)
                    selector.close()
                    return _child(request["argv"], request["env"], request["output"])
                running.add(pid)
                reply({"started": pid})
        reap()


def _child(argv: list[str], env: dict[str, str], output: str) -> int | str | None:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    out = os.open(output, os.O_WRONLY | os.O_TRUNC)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(null)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["kmigrate", *argv]
    try:
        cli.main(args=argv, prog_name="kmigrate")
    except SystemExit as exc:
        return exc.code
    return 0


# ---- the harness's side ------------------------------------------------------------------------


class Zygote:
    """The zygote as a process of the harness's; ``start`` is safe from several threads."""

    def __init__(self, *, records_per_call: int | None = None) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("KINTONE_", "KMIGRATE_"))}
        small = ["--records-per-call", str(records_per_call)] if records_per_call else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.zygote", *small],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=environ,
        )
        self._send = threading.Lock()
        self._state = threading.Condition()
        self._started: list[int] = []
        self._exits: dict[int, int] = {}
        self._gone = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = json.loads(line)
            with self._state:
                if "started" in message:
                    self._started.append(message["started"])
                else:
                    self._exits[message["exited"]] = message["code"]
                self._state.notify_all()
        with self._state:
            self._gone = True
            self._state.notify_all()

    def start(self, argv: list[str], *, env: dict[str, str], output: Path) -> Forked:
        """``kmigrate ARGV`` forked, its stdout and stderr written to ``output`` (there already
        when this returns, as with ``fresh``)."""
        output.write_bytes(b"")
        request = json.dumps({"argv": argv, "env": env, "output": str(output)}).encode() + b"\n"
        with self._send:  # one request at a time: the next "started" answers it
            assert self.process.stdin is not None
            self.process.stdin.write(request)
            self.process.stdin.flush()
            with self._state:
                if not self._state.wait_for(lambda: self._started or self._gone, timeout=60):
                    raise RuntimeError("the harness's zygote did not start a process within 60 s")
                if not self._started:
                    raise RuntimeError(f"the harness's zygote is gone (exit {self.process.poll()})")
                return Forked(self, self._started.pop(0))

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        with self._state:
            self._state.wait_for(lambda: pid in self._exits or self._gone, timeout=timeout)
            return self._exits.get(pid)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Forked:
    """A forked command, with the part of ``subprocess.Popen`` the harness uses."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self._zygote = zygote
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.wait_for(0)

    def wait_for(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.exit_code(self.pid, timeout)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        code = self.wait_for(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"kmigrate (pid {self.pid})", timeout or 0)
        return code

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass  # it has just ended; its exit code is on its way

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fresh(argv: list[str], *, env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    """``kmigrate ARGV`` as a fresh interpreter (``python -m kmigrate``), written to ``output``."""
    with output.open("wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "kmigrate", *argv],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )


if __name__ == "__main__":
    sys.exit(main())
