"""Who holds a writer claim, and whether that process still runs.

A claim names its writer (host, pid, start time, what it runs) so that a refused second writer
can be told who holds the store, and carries the boot id, pid namespace and kernel start time of
the process, so that a process on the same machine can tell for sure whether the holder is gone
(a reused pid has another start time). From another host it cannot tell, and says so (None).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


def _machine() -> tuple[str, str]:
    """(boot id, pid namespace): two processes with equal values can see each other's pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return boot, str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "", ""


def _start_ticks(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class Claim:
    """Who holds the log: enough to name them in an error and to tell whether they still run."""

    id: str
    host: str
    pid: int
    started: float  # unix time
    proc: str  # boot id / pid namespace / process start ticks
    owner: str = ""  # what the writer is, e.g. the command line

    @classmethod
    def new(cls, owner: str = "") -> Claim:
        boot, ns = _machine()
        pid = os.getpid()
        return cls(id=uuid.uuid4().hex[:12], host=socket.gethostname(), pid=pid, started=time.time(),
                   proc=f"{boot}/{ns}/{_start_ticks(pid) or ''}", owner=owner)

    def alive(self) -> bool | None:
        """True or False when this host can tell; None for a process on another host."""
        boot, ns, ticks = (self.proc.split("/") + ["", "", ""])[:3]
        if not boot or (boot, ns) != _machine():
            return None
        return _start_ticks(self.pid) == ticks

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        who = f" ({self.owner})" if self.owner else ""
        return f"pid {self.pid} on {self.host}{who}, claim {self.id} since {since}"
