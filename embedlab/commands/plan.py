"""`embedlab plan`: GPU-hours, wall-clock and cost of an embedding run, before renting anything."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from embedlab.errors import EXIT_USAGE, fail
from embedlab.planner import STREAM_BATCH, Job, Rates


def plan(
    docs: Annotated[float, typer.Option(help="Documents in the corpus (1e9 is accepted).")],
    chunks_per_doc: Annotated[float, typer.Option(
        help="Mean chunks per document.")] = Job.chunks_per_doc,
    rate: Annotated[Optional[float], typer.Option(
        help="Chunks/s per GPU at the batch you will run: sizes the fleet table "
        "(the deadline and streaming sections use r(b) when given). Default: r(b) from --rmax/--bhalf "
        "or --from-sweep.")] = None,
    price: Annotated[float, typer.Option(min=0, help="$ per GPU-hour.")] = Job.price,
    gpus: Annotated[str, typer.Option(help="Fleet sizes for the sizing table, comma-separated.")]
    = "8,64,256,1024,4096",
    overhead: Annotated[str, typer.Option(
        help="Start-up per worker (boot, pull, model load), billed: e.g. 10m, 90s.")] = "0s",
    rmax: Annotated[Optional[float], typer.Option(
        help="r_max of r(b) = r_max b / (b + b_half), chunks/s per GPU.")] = None,
    bhalf: Annotated[Optional[float], typer.Option(
        min=0, help="b_half of r(b): the batch reaching r_max / 2.")] = None,
    batch: Annotated[Optional[int], typer.Option(
        min=1, help="Batch for the sizing table with r(b). Default: --max-batch, else the knee "
             "(90% of r_max).")] = None,
    max_batch: Annotated[Optional[int], typer.Option(
        min=1, help="Per-GPU batch cap (memory) for --deadline and the weekly re-embed. "
             "Default with --from-sweep: the largest batch the sweep measured.")] = None,
    deadline: Annotated[Optional[str], typer.Option(
        help="Wall-clock limit (2h, 90m, 3600s): solve the smallest fleet and batch that meet it.")] = None,
    growth: Annotated[Optional[float], typer.Option(
        min=0, help="Corpus growth per day as a fraction (0.005 = 0.5%): add the streaming plan.")] = None,
    stream_batch: Annotated[int, typer.Option(
        min=1, help="Batch of the standing streaming fleet.")] = STREAM_BATCH,
    from_sweep: Annotated[Optional[Path], typer.Option(
        help="sweep.json written by `embedlab sweep`: take r_max and b_half from its fit, the worker's "
             "device and the batches it measured.")] = None,
    dtype: Annotated[Optional[str], typer.Option(
        help="With --from-sweep: the dtype whose fit to use. Default: the highest r_max.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Size a run: chunks, GPU-hours, cost and wall-clock per fleet size.

    Optionally solves a deadline for fleet and batch, and plans streaming updates against a weekly
    re-embed. Each section says which rate it uses; batches outside a sweep's measured range are
    warned about.
    """
    from embedlab import planner
    from embedlab.plan_render import render_plan

    try:
        job = planner.Job(docs=docs, chunks_per_doc=chunks_per_doc, price=price,
                          overhead_s=planner.parse_duration(overhead))
        rates = _rates(rate, rmax, bhalf, from_sweep, dtype, batch=batch, max_batch=max_batch)
        result = planner.make_plan(job, rates, planner.parse_ints(gpus), growth=growth, stream_batch=stream_batch,
                                   deadline_s=None if deadline is None else planner.parse_duration(deadline))
    except (ValueError, OSError, KeyError) as e:
        raise fail(str(e), EXIT_USAGE) from None
    for warning in result.warnings:
        typer.echo(f"embedlab: warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps({
            "job": asdict(job), "rate_source": result.sizing_rate.source, "worker": rates.worker,
            "device": rates.device, "measured_batches": rates.measured, "sizing": asdict(result.sizing),
            "fleet": [asdict(x) for x in result.fleet],
            "curve": None if rates.curve is None else asdict(rates.curve),
            "stream": None if result.stream is None else asdict(result.stream), "stream_rate": result.stream_rate,
            "deadline": None if result.deadline is None else asdict(result.deadline),
            "deadline_rate": result.deadline_rate, "warnings": result.warnings}, indent=2))
        return
    typer.echo(render_plan(result))


def _rates(rate: float | None, rmax: float | None, bhalf: float | None, path: Path | None,
           dtype: str | None, **options) -> Rates:
    """The plan's rates from the options: --rate, --rmax/--bhalf, or a sweep's JSON."""
    from embedlab.planner import Curve, rates_from_sweep

    if path is not None:
        if rmax is not None or bhalf is not None:
            raise ValueError("give --rmax/--bhalf or --from-sweep, not both")
        options = {k: v for k, v in options.items() if v is not None}
        return rates_from_sweep(json.loads(path.read_text()), dtype, str(path), rate=rate, **options)
    if (rmax is None) != (bhalf is None):
        raise ValueError("--rmax and --bhalf go together")
    curve = None if rmax is None else Curve(r_max=rmax, b_half=bhalf)
    return Rates(rate=rate, curve=curve, curve_source=f"r_max={rmax:g}, b_half={bhalf:g}" if curve else "",
                 **options)
