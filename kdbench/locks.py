"""Claims on work (a grid cell, a teacher to train) that several runs may reach at once.

Two runs of one grid on one results folder, or workers of one run on several machines, must not run the same
cell twice or interleave writes. Before it starts, a worker creates `<name>.lock` with O_CREAT | O_EXCL, which
exactly one process can do; the file names its owner (host, pid, a random token) and a heartbeat thread
refreshes its modification time while the work runs. A claim is stale, and is broken, when its owner is a
dead process on this host, or when its heartbeat has stopped for `stale_after_s` (an owner on another host,
or a lock file left empty by a process killed while creating it). Breaking is serialised by a second
O_EXCL file, so two runs that find the same stale claim cannot both take it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0  # ten missed heartbeats


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class Claim:
    """An exclusive, crash-recoverable claim on `path` (a `.lock` file); use `try_acquire` or `acquire`."""

    def __init__(
        self, path: str | Path, stale_after_s: float = STALE_AFTER_S, heartbeat_s: float = HEARTBEAT_S
    ):
        self.path = Path(path)
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- taking and releasing -----------------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take the claim if it is free or stale; False if a live owner holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # a second try after breaking a stale claim
            if self._create():
                self._start_heartbeat()
                return True
            if not self._break_if_stale():
                return False
        return False

    def acquire(self, poll_s: float = 1.0) -> Claim:
        """Wait until the claim is ours (a live owner finishes or dies)."""
        while not self.try_acquire():
            time.sleep(poll_s)
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.owner().get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self.acquire()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.release()

    # ---- state ------------------------------------------------------------------------------------------------
    def owner(self) -> dict:
        """The current lock file's contents, or {} when it is absent, empty or unreadable."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def is_stale(self) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        owner = self.owner()
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            return not _pid_alive(owner["pid"])
        return (
            age > self.stale_after_s
        )  # another host's owner, or a lock left empty: trust only the heartbeat

    # ---- internals ----------------------------------------------------------------------------------------
    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        body = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": self.token,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with os.fdopen(fd, "w") as fh:
            json.dump(body, fh)
        return True

    def _break_if_stale(self) -> bool:
        """Remove a stale lock under a short-lived breaker lock; True if the caller should try again."""
        breaker = Claim(self.path.with_name(self.path.name + ".break"), stale_after_s=60.0)
        if not breaker._create():
            if breaker.is_stale():
                breaker.path.unlink(missing_ok=True)
            return False
        try:
            if not self.is_stale():
                return False
            self.path.unlink(missing_ok=True)
            return True
        finally:
            breaker.path.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return
