"""The benchmark harness: warm-up and repeats, median and spread, and results named by machine and date.

Every script in benchmarks/ times through :func:`timed` (warm-up calls, then timed ones) or
:func:`in_turn` (compared setups taken round by round, so drift and load from other jobs fall on
all of them alike), summarises with :class:`Spread` (median, min-max, ± std), and writes through
:class:`Results`: ``RESULTS/<stem>_<machine>_<date>.<ext>``, so a run never overwrites another
machine's or another day's, with the machine and device line (:mod:`embedlab.report`), the run
time, the load average and the command at the foot of every table. ``--results DIR`` (on every
script, from :func:`parser`) sends the files elsewhere, e.g. for a quick check.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from embedlab.hardware import machine_info
from embedlab.report import csv_text, machine_line, machine_slug, markdown_table

__all__ = ["DATA", "REPO", "RESULTS", "PeakSampler", "Results", "Spread", "corpus_file", "in_turn",
           "markdown_table", "near_free_encoder", "parser", "run_sampled", "timed"]

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EMBEDLAB_DATA", REPO.parent / "shared" / "data"))
T = TypeVar("T")


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the module docstring as help and ``--results DIR``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="folder for the results files (default: benchmarks/results)")
    return ap


@dataclass(frozen=True)
class Spread:
    """Repeated measurements of one thing: median and spread."""

    values: tuple[float, ...]

    def __init__(self, values: Sequence[float]):
        if not values:
            raise ValueError("a spread needs at least one value")
        object.__setattr__(self, "values", tuple(float(v) for v in values))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.values)

    def map(self, fn: Callable[[float], float]) -> Spread:
        """The same runs in another unit, e.g. ``seconds.map(lambda s: chunks / s)`` for rates."""
        return Spread([fn(v) for v in self.values])

    def range(self, fmt: str = ".2f") -> str:
        """``"min-max"``."""
        return f"{self.lo:{fmt}}-{self.hi:{fmt}}"

    def pm(self, fmt: str = ".1f") -> str:
        """``"median ± std"`` (the median alone for one run)."""
        return f"{self.median:{fmt}} ± {self.std:{fmt}}" if len(self.values) > 1 else f"{self.median:{fmt}}"


def timed(fn: Callable[[], T], *, repeats: int, warmup: int = 1) -> tuple[Spread, T]:
    """``warmup`` untimed calls of ``fn``, then ``repeats`` timed ones: their seconds, and the last result."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t0)
    return Spread(seconds), out


def in_turn(setups: Mapping[str, Callable[[], T]], repeats: int,
            report: Callable[[str, T], None] | None = None) -> dict[str, list[T]]:
    """Each setup once per round, ``repeats`` rounds: what each call returned, per setup.

    Taking compared setups in turn, rather than all runs of one then all of the next, puts the
    machine's drift and other jobs' load on every setup alike. ``report(name, result)`` is called
    after each run (progress output).
    """
    out: dict[str, list[T]] = {name: [] for name in setups}
    for _ in range(repeats):
        for name, run in setups.items():
            out[name].append(run())
            if report is not None:
                report(name, out[name][-1])
    return out


class Results:
    """One benchmark run's files: ``FOLDER/<stem>_<machine>_<date>.<ext>``, and their common foot.

    Made at the start of the run: the run time and the load average before are counted from then.
    ``machine`` is :func:`embedlab.hardware.machine_info` of ``device`` (``None``: without the
    device probe); a measurement that records its own (a sweep, a compress run) replaces it.
    """

    def __init__(self, stem: str, folder: Path = RESULTS, *, device: str | None = "auto"):
        self.stem, self.folder = stem, Path(folder)
        self.started, self.load_before = time.perf_counter(), os.getloadavg()[0]
        self.machine = machine_info(device)
        self.date = time.strftime("%Y-%m-%d")

    def path(self, ext: str = "md") -> Path:
        return self.folder / f"{self.stem}_{machine_slug(self.machine)}_{self.date}.{ext}"

    def machine_line(self) -> str:
        return machine_line(self.machine)

    def foot(self, command: str) -> str:
        """Machine, run time with the load average before and after, and the command that ran."""
        return (f"Machine: {self.machine_line()}\n"
                f"Run: {time.perf_counter() - self.started:.0f} s; load average {self.load_before:.2f} "
                f"before, {os.getloadavg()[0]:.2f} after; {self.date}\n"
                f"Command: {command}\n")

    def write_text(self, text: str, ext: str = "md") -> Path:
        path = self.path(ext)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def write_markdown(self, title: str, intro: str, body: str, command: str) -> Path:
        """Print and write the results page: title, what was measured, the tables, the foot."""
        text = "\n".join([f"# {title}", "", intro, "", body, "", self.foot(command)])
        print(text)
        path = self.write_text(text)
        print(f"written: {path}")
        return path

    def write_csv(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
        """Tidy rows, one per run or point, each with the machine line (the last column)."""
        cols = list(columns) if columns is not None else list(dict.fromkeys(c for r in rows for c in r))
        return self.write_text(csv_text([{**r, "machine": self.machine_line()} for r in rows],
                                        [*cols, "machine"]), "csv")


def command_line() -> str:
    """How this script was run, for the results' foot."""
    return " ".join([".venv/bin/python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


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


def corpus_file(name: str) -> Path:
    """The BEIR corpus file of the data folder ``name``; exits with a message when it is missing."""
    src = DATA / name / "corpus.jsonl.gz"
    if not src.is_file():
        raise SystemExit(f"{src} not found (set EMBEDLAB_DATA)")
    return src


def near_free_encoder(folder: Path) -> str:
    """The input-ceiling check's encoder, written to ``folder``: a random 1-layer, 32-wide BERT
    with the all-MiniLM-L6-v2 tokenizer and a 256-token window."""
    from embedlab.testing import make_tiny_model

    return str(make_tiny_model(folder, hidden=32, layers=1, max_len=256))


def busy_note(load: float) -> str:
    """A warning for results taken while other jobs oversubscribed the machine."""
    cores = os.cpu_count() or 1
    if load <= cores:
        return ""
    return (f" **The machine was oversubscribed (load {load:.1f} on {cores} cores): absolute rates are "
            "below a quiet machine's and extra threads cannot show a gain; the ratios within this run "
            "are the comparison. Re-run on a quiet machine for absolute numbers.**")
