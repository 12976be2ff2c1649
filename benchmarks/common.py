"""Shared by the benchmark scripts: the machine line and result-file helpers."""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EMBEDLAB_DATA", REPO.parent / "shared" / "data"))


def machine() -> str:
    """CPU model, cores, memory, Python and torch versions: the line every results table names."""
    import torch

    from embedlab.hardware import cpu_model, memory_gib

    mem = memory_gib()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (f"{cpu_model()}, {os.cpu_count()} cores{f', {mem:.0f} GiB' if mem else ''}{gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write_results(name: str, title: str, intro: str, table: str, command: str, started: float) -> str:
    """Print and write ``RESULTS / name``: title, what was measured, the table, machine, run time, command."""
    text = "\n".join([f"# {title}", "", intro, "", table, "", f"Machine: {machine()}",
                      f"Run: {time.perf_counter() - started:.0f} s", f"Command: {command}", ""])
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(text)
    return text


def rss_mb(pid: int) -> float:
    """Resident memory of one process, from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            out += [int(k) for k in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    except OSError:
        pass
    return out + [g for k in out for g in descendants(k)]


class PeakSampler(threading.Thread):
    """Peak RSS of a process (the driver), of its descendants together, and of all of them."""

    def __init__(self, pid: int, every: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.driver = self.workers = self.total = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            d = rss_mb(self.pid)
            w = sum(rss_mb(c) for c in descendants(self.pid))
            self.driver, self.workers = max(self.driver, d), max(self.workers, w)
            self.total = max(self.total, d + w)
            time.sleep(self.every)


def run_sampled(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, float, PeakSampler]:
    """Run ``cmd`` to completion; return it, its wall seconds and its peak-RSS sampler."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    sampler = PeakSampler(proc.pid)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), wall, sampler


def busy_note(load: float) -> str:
    """A warning for results taken while other jobs oversubscribed the machine."""
    cores = os.cpu_count() or 1
    if load <= cores:
        return ""
    return (f" **The machine was oversubscribed (load {load:.1f} on {cores} cores): absolute rates are "
            "below a quiet machine's and extra threads cannot show a gain; the ratios within this run "
            "are the comparison. Re-run on a quiet machine for absolute numbers.**")
