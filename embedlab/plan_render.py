"""A plan as text: the sizing summary and fleet table, the deadline and the streaming plan.

Each section names the rate it uses, and the worker is called what it is: a GPU, or a CPU
worker when the rates come from a CPU sweep.
"""

from __future__ import annotations

from collections.abc import Sequence

from embedlab.planner import (SECONDS_PER_HOUR, DeadlinePlan, FleetRow, Job, Plan, Sizing, StreamPlan,
                              human_duration, markdown_table)


def num(x: float) -> str:
    """Thousands separated, whole above 100 (``2,083``), more digits below (``12.5``, ``0.0417``)."""
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.1f}"
    return f"{x:.3g}"


def rate_text(x: float) -> str:
    return f"{x:,.1f}" if x >= 1 else f"{x:.3g}"


def workers(n: int, worker: str = "GPU") -> str:
    """``1 GPU``, ``8 GPUs``, ``2 CPU workers``."""
    return f"{n} {worker}" if n == 1 else f"{n} {worker}s"


def hours_label(worker: str) -> str:
    return "GPU-hours" if worker == "GPU" else "worker-hours"


def render_sizing(job: Job, s: Sizing, rows: Sequence[FleetRow], *, worker: str = "GPU",
                  rate_source: str = "") -> str:
    """The sizing summary and the fleet table as printed by ``embedlab plan``."""
    hours = hours_label(worker)
    head = [
        f"chunks      {s.chunks:,.0f}  ({job.docs:,.0f} docs x {job.chunks_per_doc:g} chunks/doc)",
        f"rate        {s.rate:,.1f} chunks/s per {worker}" + (f"  (from {rate_source})" if rate_source else ""),
        f"{hours:<11} {num(s.gpu_hours)}  (encoding only)",
        f"cost        ${num(s.cost)}  at ${job.price:,.2f} per {worker}-hour",
    ]
    if job.overhead_s:
        head.append(f"start-up    {human_duration(job.overhead_s)} per worker, billed")
    table = markdown_table(
        [f"{worker}s", "wall-clock (h)", "wall-clock", hours, "cost ($)", "speed-up", "efficiency"],
        [[f"{r.gpus:,}", f"{r.wall_hours:,.1f}", human_duration(r.wall_hours * SECONDS_PER_HOUR),
          num(r.gpu_hours), num(r.cost), f"{r.speedup:,.1f}", f"{r.efficiency:.2f}"]
         for r in rows])
    return "\n".join(head) + ("\n\n" + table if rows else "")


def render_deadline(p: DeadlinePlan, *, worker: str = "GPU", rate_source: str = "") -> str:
    """The deadline solution in three lines."""
    first = f"deadline {human_duration(p.deadline_hours * SECONDS_PER_HOUR)}: {workers(p.gpus, worker)}"
    if p.batch is None:
        first += f" at {p.rate:,.1f} chunks/s each"
    else:
        first += f" at batch {p.batch} (r = {p.rate:,.1f} chunks/s per {worker})"
    if rate_source:
        first += f", rate from {rate_source}"
    misses = []
    if p.gpus > 1:
        misses.append(workers(p.gpus - 1, worker) + (f" at the batch cap {p.max_batch}" if p.batch else ""))
    if p.batch and p.batch > 1:
        misses.append(f"batch {p.batch - 1} on {workers(p.gpus, worker)}")
    last = "  " + (" or ".join(misses) + " would miss it" if misses else "a single worker meets it")
    wall = human_duration(p.wall_hours * SECONDS_PER_HOUR)
    cost = f"  wall-clock {wall}, {num(p.gpu_hours)} {hours_label(worker)}, ${num(p.cost)}"
    return f"{first}\n{cost}\n{last}"


def render_stream(p: StreamPlan, *, worker: str = "GPU", rate_source: str = "") -> str:
    """The streaming plan against a weekly re-embed."""
    cheaper = "streaming" if p.stream_cost_week < p.reembed_cost_week else "weekly re-embed"
    hours = hours_label(worker)
    return "\n".join([
        (f"streaming at {p.growth:.2%}/day: {p.new_chunks_per_day:,.0f} new chunks/day "
         f"= {rate_text(p.load)} chunks/s steady-state load"
         + (f" (rates from {rate_source})" if rate_source else "")),
        (f"  standing fleet {workers(p.standing_gpus, worker)} at batch {p.stream_batch} "
         f"({p.stream_rate:,.1f} chunks/s each, {p.utilisation:.0%} busy): "
         f"{num(p.stream_gpu_hours_week)} {hours}, ${num(p.stream_cost_week)} per week"),
        (f"  weekly re-embed at batch {p.bulk_batch} ({p.bulk_rate:,.1f} chunks/s): "
         f"{num(p.reembed_gpu_hours_week)} {hours}, ${num(p.reembed_cost_week)} per week"),
        (f"  break-even growth {p.breakeven_growth:.2%}/day (streaming costs more above it); "
         f"cheaper now: {cheaper}"),
    ])


def render_plan(plan: Plan) -> str:
    """The whole plan: which worker, then each section with the rate it uses."""
    r = plan.rates
    lines = [f"worker: {r.worker}" + (f" ({r.device}, as the sweep measured)" if r.device else "")]
    lines.append(render_sizing(plan.job, plan.sizing, plan.fleet, worker=r.worker,
                               rate_source=plan.sizing_rate.source))
    if plan.stream is not None:
        lines.append("\n" + render_stream(plan.stream, worker=r.worker, rate_source=plan.stream_rate))
    if plan.deadline is not None:
        lines.append("\n" + render_deadline(plan.deadline, worker=r.worker, rate_source=plan.deadline_rate))
    return "\n".join(lines)
