"""One job runner: work units become tasks, and each result is committed as it lands.

Embed (the corpus's partitions), update (the changed documents' partitions) and stream
(micro-batches) are one kind of job. A job says what a unit's key is, whether the store already
holds it, how a finished unit is committed and how to save what was committed; the runner owns
the rest:

* bounded in-flight submission: at most ``max_in_flight`` units are on the cluster, so memory
  stays bounded however many units the plan yields;
* scatter: a unit's payload is sent to a worker and the task takes the scattered future, so the
  scheduler and the client never keep a copy of it in a task spec (payloads embedded in specs
  made the driver grow by about a payload per task);
* resubmission after a lost worker: scattered data dies with its worker, so a unit whose worker
  died is scattered and submitted again, up to :data:`MAX_LOST_ATTEMPTS` times;
* SIGINT at a safe point: Ctrl-C stops the job between two commits, never inside one;
* progress and the timings of the run.

The runner only schedules: it never reads a unit or a result.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from embedlab.files import EnvironmentFault

U = TypeVar("U")
R = TypeVar("R")
MAX_LOST_ATTEMPTS = 3  # times a unit is re-sent after the worker holding it died


class Job(Protocol[U, R]):
    """What the runner needs to know about a job's units and results."""

    name: str  # the progress bar's label
    progress: bool  # show a progress bar on stderr

    def key(self, unit: U) -> str:
        """A stable name for the unit's task (the runner appends the attempt)."""

    def describe(self, unit: U) -> str:
        """The unit in an error message, e.g. ``partition 3``."""

    def done(self, unit: U) -> bool:
        """True when the store already holds ``unit`` (a resumed run skips it)."""

    def size(self, unit: U) -> int:
        """The unit's weight on the progress bar (e.g. chunks)."""

    def land(self, unit: U, result: R) -> None:
        """Commit one finished unit."""

    def save(self) -> None:
        """Make what has landed durable (called once at the end, and when the job stops early)."""

    # Optional: ``flush()``, called when no other result is ready, commits what landed since the
    # last commit as one record (group commit); a job without it commits in ``land``.
    # Optional: ``poll()``, called while the runner waits for a unit, commits what a running unit
    # has already finished (a split's partitions, reported by its task as they are written).


@dataclass
class RunStats:
    """What the runner did: units seen, skipped, landed and re-sent, and when it started."""

    units: int = 0  # every unit the plan yielded
    skipped: int = 0  # held by the store already
    landed: int = 0
    resent: int = 0  # submitted again after the worker holding them died
    first_submit: float | None = None  # time.perf_counter() of the first submission (None: none)


class StopOnSigint:
    """Turn SIGINT into a KeyboardInterrupt at the next safe point of a job's loop.

    Dask's client runs its I/O on another thread and may swallow an interrupt that lands inside
    one of its calls; a flag checked between units stops the job the same way every time. Only
    the main thread can take the signal; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None

    def __enter__(self) -> StopOnSigint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def scatter(client, payload: Any, attempts: int = 5):
    """Send ``payload`` to a worker; if that worker dies mid-send, wait a moment and pick another."""
    from distributed.comm.core import CommClosedError

    for attempt in range(attempts):
        try:
            [data] = client.scatter([payload], hash=False)
            return data
        except (CommClosedError, OSError):
            if attempt + 1 == attempts:
                raise
            time.sleep(1.0 + attempt)


def _progress_bar(job: Job):
    from tqdm.auto import tqdm

    return tqdm(unit="chunk", desc=job.name, disable=not job.progress, file=sys.stderr, dynamic_ncols=True)


def _finish(job: Job, ok: bool) -> None:
    if ok:
        job.save()
        return
    with contextlib.suppress(EnvironmentFault):  # the first fault is the one to report
        job.save()


def run_on_cluster(client, job: Job[U, R], units: Iterable[U], task: Callable[..., R | BaseException],
                   *args: Any, max_in_flight: int) -> RunStats:
    """Run ``task(unit, *args)`` on the cluster for every unit the store lacks; land each result.

    A task may return an exception instead of raising it (a full disk, a read-only store): the
    worker then neither retries it nor logs a traceback, and the runner raises it here.

    Raises:
        RuntimeError: a unit was lost with :data:`MAX_LOST_ATTEMPTS` workers.
        KeyboardInterrupt: SIGINT, at the next safe point; what landed before is saved.
    """
    from distributed import as_completed

    stats = RunStats()
    pending = as_completed()
    in_flight: dict[str, tuple[U, Any, int]] = {}
    bar = _progress_bar(job)
    flush = getattr(job, "flush", None)

    def submit(unit: U, attempt: int = 0) -> None:
        data = scatter(client, unit)
        future = client.submit(task, data, *args, retries=2, key=f"{job.key(unit)}-{attempt}")
        in_flight[future.key] = (unit, data, attempt)
        pending.add(future)

    def land(future) -> None:
        unit, data, attempt = in_flight.pop(future.key)
        try:
            value = future.result()
        except CancelledError:  # its input was lost with a dead worker: send it again
            if attempt + 1 >= MAX_LOST_ATTEMPTS:
                raise RuntimeError(f"{job.describe(unit)} was lost with {attempt + 1} workers") from None
            stats.resent += 1
            submit(unit, attempt + 1)
            return
        finally:
            future.release()
            data.release()
        if isinstance(value, BaseException):
            raise value
        job.land(unit, value)
        stats.landed += 1
        if flush is not None and not pending.has_ready():
            flush()  # group commit: every result that landed since the last record
        bar.update(job.size(unit))
        show_committed()
        bar.set_postfix(units=f"{stats.landed + stats.skipped}")

    poll = getattr(job, "poll", None)
    def show_committed() -> None:  # a job that commits inside its units counts its chunks itself
        committed = getattr(job, "chunks_committed", 0)
        if committed > bar.n:
            bar.update(committed - bar.n)

    def next_done():
        while poll is not None and not pending.has_ready():
            poll()
            show_committed()
            stop.check()
            time.sleep(0.05)
        return next(pending)

    ok = False
    with StopOnSigint() as stop:
        try:
            for unit in units:
                stop.check()
                stats.units += 1
                if job.done(unit):
                    stats.skipped += 1
                    bar.update(job.size(unit))
                    continue
                if stats.first_submit is None:
                    stats.first_submit = time.perf_counter()
                submit(unit)
                while len(in_flight) >= max_in_flight:
                    land(next_done())
                    stop.check()
            while in_flight:
                land(next_done())
                stop.check()
            ok = True
        finally:
            bar.close()
            _finish(job, ok)
    return stats


def run_in_process(job: Job[U, R], units: Iterable[U | None], task: Callable[[U], R]) -> RunStats:
    """Run ``task(unit)`` here, one unit at a time, landing each result before the next unit.

    For jobs whose units are small and whose latency matters (a stream's micro-batches). The
    unit source yields None while it waits for input, so a Ctrl-C is seen within one wait.

    Raises:
        KeyboardInterrupt: SIGINT, at the next safe point; what landed before is saved.
    """
    stats = RunStats()
    ok = False
    with StopOnSigint() as stop:
        try:
            for unit in units:
                stop.check()
                if unit is None:
                    continue
                stats.units += 1
                if job.done(unit):
                    stats.skipped += 1
                    continue
                if stats.first_submit is None:
                    stats.first_submit = time.perf_counter()
                job.land(unit, task(unit))
                stats.landed += 1
            ok = True
        finally:
            _finish(job, ok)
    return stats
