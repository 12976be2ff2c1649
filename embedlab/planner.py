"""Know the bill before the run: chunks, GPU-hours, wall-clock and cost of an embedding job.

One worker (a GPU, or a CPU process) encodes ``r`` chunks per second. At batch size ``b`` its
rate follows the saturation curve

    r(b) = r_max * b / (b + b_half)

where ``r_max`` is the rate an unbounded batch would reach and ``b_half`` the batch that
reaches half of it (``embedlab sweep`` measures both). A job of ``N`` chunks then needs
``N / r / 3600`` GPU-hours of encoding; a fleet of ``G`` workers that each spend
``overhead_s`` starting up (boot, image pull, model load, warm-up) finishes in
``overhead_s + N / (G r)`` seconds and is billed ``G`` times that.

Everything here is arithmetic: numbers in, frozen dataclasses or strings out; no torch, no
dask, no I/O.

Example:
    >>> job = Job(docs=1e9, chunks_per_doc=6, price=1.10)
    >>> s = sizing(job, rate=800)
    >>> round(s.gpu_hours), round(s.cost)
    (2083, 2292)
    >>> round(fleet(job, 800, gpus=8).wall_hours, 1)
    260.4
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from embedlab.units import (SECONDS_PER_DAY, SECONDS_PER_HOUR, human_duration, parse_duration,  # noqa: F401
                            parse_ints)

HOURS_PER_WEEK = 168.0
STREAM_BATCH = 32  # batch of a standing streaming fleet: small, for latency
_EPS = 1e-12


def r_of_b(b, r_max: float, b_half: float):
    """Rate at batch size ``b``: ``r_max * b / (b + b_half)``.

    Args:
        b: batch size(s), scalar or array (chunks per forward pass).
        r_max: chunks/s per worker as the batch grows without bound.
        b_half: batch size at which the rate is ``r_max / 2``.

    Returns:
        chunks/s per worker, a float or an array shaped like ``b``.

    Example:
        >>> [round(r_of_b(b, 900, 96)) for b in (8, 32, 128, 512, 2048)]
        [69, 225, 514, 758, 860]
    """
    b = np.asarray(b, dtype=np.float64) if not np.isscalar(b) else float(b)
    return r_max * b / (b + b_half)


@dataclass(frozen=True, kw_only=True)
class Curve:
    """A fitted saturation curve r(b) of one worker."""

    r_max: float  # chunks/s per worker as the batch grows without bound
    b_half: float  # batch size (chunks) at which the rate is r_max / 2

    def __post_init__(self) -> None:
        if not self.r_max > 0:
            raise ValueError(f"r_max must be > 0; got {self.r_max}")
        if not self.b_half >= 0:
            raise ValueError(f"b_half must be >= 0; got {self.b_half}")

    def rate(self, b):
        """chunks/s per worker at batch ``b`` (scalar or array)."""
        return r_of_b(b, self.r_max, self.b_half)

    def batch_for_rate(self, rate: float) -> int:
        """Smallest integer batch whose rate is at least ``rate`` chunks/s.

        Raises:
            ValueError: ``rate`` is not below ``r_max``, so no batch reaches it.
        """
        if rate >= self.r_max:
            raise ValueError(f"no batch reaches {rate:g} chunks/s: r_max is {self.r_max:g}")
        if rate <= 0:
            return 1
        b = max(1, math.ceil(self.b_half * rate / (self.r_max - rate) - 1e-9))
        while self.rate(b) < rate * (1 - _EPS):
            b += 1
        while b > 1 and self.rate(b - 1) >= rate * (1 - _EPS):
            b -= 1
        return b

    def knee(self, frac: float = 0.9) -> int:
        """The knee: smallest integer batch reaching ``frac`` of ``r_max`` (``ceil(9 b_half)`` at 0.9)."""
        if not 0 < frac < 1:
            raise ValueError(f"frac must be in (0, 1); got {frac}")
        return self.batch_for_rate(frac * self.r_max)


@dataclass(frozen=True, kw_only=True)
class Job:
    """What is to be embedded and what a worker-hour costs."""

    docs: float  # documents in the corpus
    chunks_per_doc: float = 1.0  # mean chunks per document
    price: float = 0.0  # $ per GPU-hour (per worker-hour)
    overhead_s: float = 0.0  # start-up per worker (boot, pull, model load, warm-up): billed, encodes nothing

    def __post_init__(self) -> None:
        if not self.docs > 0:
            raise ValueError(f"docs must be > 0; got {self.docs}")
        if not self.chunks_per_doc > 0:
            raise ValueError(f"chunks_per_doc must be > 0; got {self.chunks_per_doc}")
        if self.price < 0:
            raise ValueError(f"price must be >= 0; got {self.price}")
        if self.overhead_s < 0:
            raise ValueError(f"overhead_s must be >= 0; got {self.overhead_s}")

    @property
    def chunks(self) -> float:
        """N_chunks = docs * chunks_per_doc."""
        return self.docs * self.chunks_per_doc


@dataclass(frozen=True, kw_only=True)
class Sizing:
    """The work of a job at one per-worker rate, independent of the fleet."""

    chunks: float  # N_chunks
    rate: float  # chunks/s per worker
    gpu_hours: float  # encoding time on one worker: chunks / rate / 3600 (start-up not included)
    cost: float  # gpu_hours * price ($)


@dataclass(frozen=True, kw_only=True)
class FleetRow:
    """The job on a fleet of ``gpus`` workers that split the chunks evenly."""

    gpus: int
    wall_hours: float  # overhead_s / 3600 + chunks / (gpus * rate) / 3600
    gpu_hours: float  # billed: gpus * wall_hours
    cost: float  # gpu_hours * price ($)
    speedup: float  # wall_hours of one worker / wall_hours
    efficiency: float  # speedup / gpus (1.0 without start-up overhead)


def _check_rate(rate: float) -> float:
    if not rate > 0:
        raise ValueError(f"rate must be > 0 chunks/s; got {rate}")
    return float(rate)


def sizing(job: Job, rate: float) -> Sizing:
    """Chunks, GPU-hours and cost of ``job`` at ``rate`` chunks/s per worker."""
    rate = _check_rate(rate)
    hours = job.chunks / rate / SECONDS_PER_HOUR
    return Sizing(chunks=job.chunks, rate=rate, gpu_hours=hours, cost=hours * job.price)


def _wall_hours(job: Job, rate: float, gpus: int) -> float:
    return (job.overhead_s + job.chunks / (gpus * rate)) / SECONDS_PER_HOUR


def fleet(job: Job, rate: float, gpus: int) -> FleetRow:
    """Wall-clock, billed GPU-hours and cost of ``job`` on ``gpus`` workers at ``rate`` each."""
    rate = _check_rate(rate)
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1; got {gpus}")
    wall = _wall_hours(job, rate, gpus)
    speedup = _wall_hours(job, rate, 1) / wall
    return FleetRow(gpus=int(gpus), wall_hours=wall, gpu_hours=gpus * wall,
                    cost=gpus * wall * job.price, speedup=speedup, efficiency=speedup / gpus)


def fleet_sweep(job: Job, rate: float, gpus: Iterable[int]) -> list[FleetRow]:
    """One :class:`FleetRow` per fleet size in ``gpus``, in the order given."""
    return [fleet(job, rate, g) for g in gpus]


def gpus_for_deadline(job: Job, rate: float, deadline_s: float) -> int:
    """Smallest fleet that finishes ``job`` within ``deadline_s`` seconds at ``rate`` per worker.

    Raises:
        ValueError: the deadline is not longer than the start-up overhead.
    """
    rate = _check_rate(rate)
    work_s = deadline_s - job.overhead_s
    if deadline_s <= 0 or work_s <= 0:
        raise ValueError(f"deadline {human_duration(deadline_s)} leaves no time after the "
                         f"start-up overhead of {human_duration(job.overhead_s)}")
    g = max(1, math.ceil(job.chunks / (rate * work_s) - 1e-9))
    while _wall_hours(job, rate, g) * SECONDS_PER_HOUR > deadline_s * (1 + _EPS):
        g += 1
    return g


@dataclass(frozen=True, kw_only=True)
class DeadlinePlan:
    """The smallest fleet, then the smallest batch, that meet a wall-clock deadline."""

    deadline_hours: float
    gpus: int  # smallest fleet that meets the deadline at the batch cap
    batch: int | None  # smallest batch at which ``gpus`` still meet it; None for a fixed rate
    max_batch: int | None  # the per-GPU batch cap (memory); None for a fixed rate
    rate: float  # chunks/s per worker at ``batch``
    wall_hours: float
    gpu_hours: float  # billed: gpus * wall_hours
    cost: float


def solve_deadline(job: Job, deadline_s: float, rate: float | Curve,
                   max_batch: int | None = None) -> DeadlinePlan:
    """Smallest fleet G and batch b that finish ``job`` within ``deadline_s``.

    With a :class:`Curve`, the fastest allowed batch (``max_batch``) fixes the smallest fleet
    G; then b is the smallest batch at which those G workers still meet the deadline (less
    memory and latency, same fleet). With a fixed rate only G is solved.

    Args:
        job: the job.
        deadline_s: wall-clock limit in seconds, start-up included.
        rate: chunks/s per worker, or the curve r(b).
        max_batch: per-GPU batch cap in chunks; needed with a curve.

    Example:
        >>> p = solve_deadline(Job(docs=1e9, chunks_per_doc=6), 7200, Curve(r_max=900, b_half=96), 2048)
        >>> p.gpus
        970
    """
    if not isinstance(rate, Curve):
        g = gpus_for_deadline(job, rate, deadline_s)
        row = fleet(job, rate, g)
        return DeadlinePlan(deadline_hours=deadline_s / SECONDS_PER_HOUR, gpus=g, batch=None,
                            max_batch=None, rate=float(rate), wall_hours=row.wall_hours,
                            gpu_hours=row.gpu_hours, cost=row.cost)
    if max_batch is None or max_batch < 1:
        raise ValueError(f"max_batch must be >= 1 with a rate curve; got {max_batch}")
    g = gpus_for_deadline(job, float(rate.rate(max_batch)), deadline_s)
    need = job.chunks / (g * (deadline_s - job.overhead_s))
    b = min(max_batch, rate.batch_for_rate(need))
    r = float(rate.rate(b))
    row = fleet(job, r, g)
    return DeadlinePlan(deadline_hours=deadline_s / SECONDS_PER_HOUR, gpus=g, batch=b,
                        max_batch=max_batch, rate=r, wall_hours=row.wall_hours,
                        gpu_hours=row.gpu_hours, cost=row.cost)


@dataclass(frozen=True, kw_only=True)
class StreamPlan:
    """Keeping the index fresh as the corpus grows: a standing fleet or a weekly re-embed.

    Definitions:
        steady-state load: the new chunks that arrive per day (``growth * chunks``), and the
            same as an average rate in chunks/s (``/ 86400``).
        standing fleet: the workers kept up around the clock at the small streaming batch
            (low latency per new document) so that their combined rate covers the load:
            ``ceil(load / r(stream_batch))``. It is billed 168 hours a week.
        break-even growth: the daily growth at which a week of streaming work (7 days of new
            chunks at ``r(stream_batch)``) costs as many GPU-hours as re-embedding the whole
            corpus once a week at ``r(bulk_batch)``: ``r(stream_batch) / (7 r(bulk_batch))``.
            Above it, streaming costs more than the weekly re-embed even with a fully used
            standing fleet; the rounded-up fleet crosses over at this growth or below.
            Start-up overhead is left out of both sides.
    """

    growth: float  # fraction of the corpus added per day
    new_chunks_per_day: float  # the steady-state load, per day
    load: float  # the steady-state load in chunks/s (averaged over a day)
    stream_batch: int
    stream_rate: float  # chunks/s per worker at stream_batch
    standing_gpus: int  # workers kept up around the clock
    utilisation: float  # load / (standing_gpus * stream_rate)
    stream_gpu_hours_week: float  # standing_gpus * 168
    stream_cost_week: float
    bulk_batch: int
    bulk_rate: float  # chunks/s per worker at bulk_batch
    reembed_gpu_hours_week: float  # one full re-embed: chunks / bulk_rate / 3600
    reembed_cost_week: float
    breakeven_growth: float  # per day; stream_rate / (7 * bulk_rate)


def stream_plan(job: Job, growth: float, curve: Curve, stream_batch: int, bulk_batch: int) -> StreamPlan:
    """Standing fleet for a daily ``growth`` at ``stream_batch``, against a weekly full re-embed.

    Args:
        job: the corpus as it is now (``job.chunks``) and the price.
        growth: fraction of the corpus added per day, e.g. 0.005 for 0.5 %/day.
        curve: r(b) of one worker.
        stream_batch: small batch used to embed new documents as they arrive.
        bulk_batch: batch of the weekly re-embed (usually the memory cap).
    """
    if growth < 0:
        raise ValueError(f"growth must be >= 0; got {growth}")
    if stream_batch < 1 or bulk_batch < 1:
        raise ValueError(f"batches must be >= 1; got {stream_batch} and {bulk_batch}")
    per_day = growth * job.chunks
    load = per_day / SECONDS_PER_DAY
    r_s, r_b = float(curve.rate(stream_batch)), float(curve.rate(bulk_batch))
    standing = max(1, math.ceil(load / r_s - 1e-9)) if load > 0 else 0
    reembed = job.chunks / r_b / SECONDS_PER_HOUR
    return StreamPlan(
        growth=growth, new_chunks_per_day=per_day, load=load, stream_batch=stream_batch,
        stream_rate=r_s, standing_gpus=standing,
        utilisation=load / (standing * r_s) if standing else 0.0,
        stream_gpu_hours_week=standing * HOURS_PER_WEEK,
        stream_cost_week=standing * HOURS_PER_WEEK * job.price,
        bulk_batch=bulk_batch, bulk_rate=r_b, reembed_gpu_hours_week=reembed,
        reembed_cost_week=reembed * job.price, breakeven_growth=r_s / (7 * r_b),
    )


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers are right-aligned (:func:`embedlab.report.markdown_table`)."""
    from embedlab.report import markdown_table as table

    return table(header, rows, align=True)


# -- which rate each section of a plan uses -------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Rates:
    """Where a plan's per-worker rates come from, and what one worker is.

    A fixed ``rate`` sizes the fleet table; the curve r(b) sizes it when no rate is given, and
    always drives the deadline's batch and the streaming plan (they need r at several batches).
    """

    rate: float | None = None  # chunks/s per worker at the batch that will run (--rate)
    curve: Curve | None = None
    curve_source: str = ""  # e.g. "r_max=900, b_half=96" or "bf16 fit of runs/sweep/sweep.json"
    worker: str = "GPU"  # what one worker is: "GPU", or "CPU worker" for a CPU sweep
    device: str = ""  # the machine the curve was measured on, when a sweep says
    measured: tuple[int, int] | None = None  # smallest and largest batch the sweep measured
    batch: int | None = None  # batch of the sizing table with r(b); None: the cap, else the knee
    max_batch: int | None = None  # per-worker batch cap (memory): deadline and weekly re-embed

    def __post_init__(self) -> None:
        if self.rate is None and self.curve is None:
            raise ValueError("give --rate, or --rmax and --bhalf, or --from-sweep")
        if self.rate is not None:
            _check_rate(self.rate)
        for name in ("batch", "max_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")

    def bulk_batch(self) -> int:
        """Batch of a bulk run with r(b): the cap, else the sizing batch, else the knee."""
        return self.max_batch or self.batch or self.curve.knee()


@dataclass(frozen=True, kw_only=True)
class SectionRate:
    """The rate one section of a plan uses, and a phrase saying where it comes from."""

    rate: float  # chunks/s per worker
    batch: int | None  # the batch it holds at; None for a fixed --rate
    source: str  # "--rate", or "r(2048) with r_max=900, b_half=96"


def sizing_rate(rates: Rates) -> SectionRate:
    """The rate of the sizing table: ``--rate`` when given, else r(b) at the bulk batch."""
    if rates.rate is not None:
        return SectionRate(rate=float(rates.rate), batch=None, source="--rate")
    b = rates.batch or rates.bulk_batch()
    return SectionRate(rate=float(rates.curve.rate(b)), batch=b, source=f"r({b}) with {rates.curve_source}")


def rate_warnings(rates: Rates, batches: Iterable[int]) -> list[str]:
    """One line per batch outside the measured range, and one when two rates are mixed."""
    out = []
    if rates.measured is not None:
        lo, hi = rates.measured
        outside = sorted({b for b in batches if b < lo or b > hi})
        if outside:
            out.append(f"batch {', '.join(map(str, outside))} outside the batches the sweep measured "
                       f"({lo}-{hi}): r(b) there is extrapolated from the fit")
    if rates.rate is not None and rates.curve is not None:
        out.append(f"the sizing table uses --rate {rates.rate:g}; the deadline and streaming "
                   f"sections use r(b) ({rates.curve_source})")
    return out


def rates_from_sweep(doc: dict, dtype: str | None, where: str, **options) -> Rates:
    """:class:`Rates` from a parsed sweep.json: ``dtype``'s fit (default: highest r_max), the
    device and the measured batches; ``options``: the other :class:`Rates` fields."""
    fits = doc.get("fits") or {}
    if not fits:
        raise ValueError(f"{where}: the sweep has no fit (fewer than two measured batch sizes)")
    dtype = dtype or max(fits, key=lambda d: fits[d]["r_max"])
    if dtype not in fits:
        raise ValueError(f"{where}: no fit for dtype {dtype!r}; it has {', '.join(fits)}")
    fit = fits[dtype]
    ok = [int(r["batch"]) for r in doc.get("rows", []) if r.get("dtype") == dtype and r.get("status") == "ok"]
    machine = doc.get("machine") or {}
    device = str(machine.get("device", ""))
    cpu = device == "cpu"
    name = machine.get("cpu", "") if cpu else machine.get("gpu", "")
    options.setdefault("max_batch", fit["max_batch"])
    return Rates(curve=Curve(r_max=fit["r_max"], b_half=fit["b_half"]),
                 curve_source=f"r_max={fit['r_max']:,.1f}, b_half={fit['b_half']:,.1f} ({dtype}, fit in {where})",
                 worker="CPU worker" if cpu else "GPU", device=f"{name} ({device})" if name else device,
                 measured=(min(ok), max(ok)) if ok else (1, int(fit["max_batch"])), **options)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything ``embedlab plan`` prints: each section with the rate it used."""

    job: Job
    rates: Rates
    sizing: Sizing
    sizing_rate: SectionRate
    fleet: list[FleetRow]
    deadline: DeadlinePlan | None = None
    deadline_rate: str = ""  # where the deadline's rate comes from
    stream: StreamPlan | None = None
    stream_rate: str = ""
    warnings: list[str]


def make_plan(job: Job, rates: Rates, fleet_sizes: Sequence[int], *, deadline_s: float | None = None,
              growth: float | None = None, stream_batch: int = STREAM_BATCH) -> Plan:
    """Size ``job`` at ``rates``; solve ``deadline_s`` and plan a daily ``growth`` when given."""
    first, stream, dead, dead_src, stream_src = sizing_rate(rates), None, None, "", ""
    used = [first.batch] if first.batch else []
    if growth is not None:
        if rates.curve is None:
            raise ValueError("--growth needs r(b): give --rmax and --bhalf, or --from-sweep")
        stream = stream_plan(job, growth, rates.curve, stream_batch, rates.bulk_batch())
        stream_src = f"r(b) with {rates.curve_source}"
        used += [stream.stream_batch, stream.bulk_batch]
    if deadline_s is not None:
        if rates.curve is None:
            dead, dead_src = solve_deadline(job, deadline_s, rates.rate), "--rate"
        elif rates.max_batch is None:
            raise ValueError("--deadline with r(b) needs --max-batch (the per-GPU batch cap)")
        else:
            dead = solve_deadline(job, deadline_s, rates.curve, rates.max_batch)
            dead_src = f"r(b) with {rates.curve_source}"
            used += [dead.batch, dead.max_batch]
    return Plan(job=job, rates=rates, sizing=sizing(job, first.rate), sizing_rate=first,
                fleet=fleet_sweep(job, first.rate, fleet_sizes), deadline=dead, deadline_rate=dead_src,
                stream=stream, stream_rate=stream_src, warnings=rate_warnings(rates, used))
