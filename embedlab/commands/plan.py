"""`embedlab plan`: GPU-hours, wall-clock and cost of an embedding run, before renting anything."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

EXIT_USAGE = 2


def _usage(message: str) -> typer.Exit:
    typer.echo(f"embedlab: error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def plan(
    docs: Annotated[float, typer.Option(help="Documents in the corpus (1e9 is accepted).")],
    chunks_per_doc: Annotated[float, typer.Option(help="Mean chunks per document.")] = 1.0,
    rate: Annotated[Optional[float], typer.Option(
        help="Chunks/s per GPU at the batch you will run. "
             "Default: r(b) from --rmax/--bhalf or --from-sweep.")] = None,
    price: Annotated[float, typer.Option(help="$ per GPU-hour.")] = 0.0,
    gpus: Annotated[str, typer.Option(help="Fleet sizes for the sizing table, comma-separated.")]
    = "8,64,256,1024,4096",
    overhead: Annotated[str, typer.Option(
        help="Start-up per worker (boot, pull, model load), billed: e.g. 10m, 90s.")] = "0s",
    rmax: Annotated[Optional[float], typer.Option(
        help="r_max of r(b) = r_max b / (b + b_half), chunks/s per GPU.")] = None,
    bhalf: Annotated[Optional[float], typer.Option(
        help="b_half of r(b): the batch reaching r_max / 2.")] = None,
    batch: Annotated[Optional[int], typer.Option(
        help="Batch for the sizing table with r(b). Default: --max-batch, else the knee "
             "(90% of r_max).")] = None,
    max_batch: Annotated[Optional[int], typer.Option(
        help="Per-GPU batch cap (memory) for --deadline and the weekly re-embed. "
             "Default with --from-sweep: the largest batch the sweep measured.")] = None,
    deadline: Annotated[Optional[str], typer.Option(
        help="Wall-clock limit (2h, 90m, 3600s): solve the smallest fleet and batch that meet it.")] = None,
    growth: Annotated[Optional[float], typer.Option(
        help="Corpus growth per day as a fraction (0.005 = 0.5%): add the streaming plan.")] = None,
    stream_batch: Annotated[int, typer.Option(help="Batch of the standing streaming fleet.")] = 32,
    from_sweep: Annotated[Optional[Path], typer.Option(
        help="sweep.json written by `embedlab sweep`: take r_max and b_half from its fit.")] = None,
    dtype: Annotated[Optional[str], typer.Option(
        help="With --from-sweep: the dtype whose fit to use. Default: the highest r_max.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Size a run: chunks, GPU-hours, cost, and wall-clock per fleet size; optionally solve a
    deadline for fleet and batch, and plan streaming updates against a weekly re-embed."""
    from embedlab import planner

    try:
        job = planner.Job(docs=docs, chunks_per_doc=chunks_per_doc, price=price,
                          overhead_s=planner.parse_duration(overhead))
        fleet_sizes = planner.parse_ints(gpus)
        curve, source, sweep_max = _curve(rmax, bhalf, from_sweep, dtype)
        if curve is None and rate is None:
            raise ValueError("give --rate, or --rmax and --bhalf, or --from-sweep")
        cap = max_batch or sweep_max
        if rate is not None:
            r, how = rate, "--rate"
        else:
            b = batch or cap or curve.knee()
            r, how = float(curve.rate(b)), f"r({b}) with {source}"
        s = planner.sizing(job, r)
        rows = planner.fleet_sweep(job, r, fleet_sizes)
        stream = dead = None
        if growth is not None:
            if curve is None:
                raise ValueError("--growth needs r(b): give --rmax and --bhalf, or --from-sweep")
            stream = planner.stream_plan(job, growth, curve, stream_batch, cap or batch or curve.knee())
        if deadline is not None:
            if curve is not None and cap is None:
                raise ValueError("--deadline with r(b) needs --max-batch (the per-GPU batch cap)")
            dead = planner.solve_deadline(job, planner.parse_duration(deadline),
                                          rate if curve is None else curve, cap)
    except (ValueError, OSError, KeyError) as e:
        raise _usage(str(e)) from None

    if as_json:
        typer.echo(json.dumps({
            "job": asdict(job), "rate_source": how, "sizing": asdict(s), "fleet": [asdict(x) for x in rows],
            "curve": None if curve is None else asdict(curve),
            "stream": None if stream is None else asdict(stream),
            "deadline": None if dead is None else asdict(dead)}, indent=2))
        return
    typer.echo(f"rate from {how}")
    typer.echo(planner.render_sizing(job, s, rows))
    if stream is not None:
        typer.echo("\n" + planner.render_stream(stream))
    if dead is not None:
        typer.echo("\n" + planner.render_deadline(dead))


def _curve(rmax: float | None, bhalf: float | None, path: Path | None, dtype: str | None):
    """(curve or None, where it came from, the sweep's largest measured batch or None)."""
    from embedlab.planner import Curve

    if path is not None:
        if rmax is not None or bhalf is not None:
            raise ValueError("give --rmax/--bhalf or --from-sweep, not both")
        from embedlab.experiments.sweeps import read_sweep_fits

        fits = read_sweep_fits(path)
        if not fits:
            raise ValueError(f"{path}: the sweep has no fit (fewer than two measured batch sizes)")
        if dtype is None:
            dtype = max(fits, key=lambda d: fits[d].r_max)
        if dtype not in fits:
            raise ValueError(f"{path}: no fit for dtype {dtype!r}; it has {', '.join(fits)}")
        f = fits[dtype]
        return (f.curve, f"r_max={f.r_max:,.1f}, b_half={f.b_half:,.1f} ({dtype}, {path})",
                f.max_batch)
    if (rmax is None) != (bhalf is None):
        raise ValueError("--rmax and --bhalf go together")
    if rmax is None:
        return None, "", None
    return Curve(r_max=rmax, b_half=bhalf), f"r_max={rmax:g}, b_half={bhalf:g}", None


def register(app: typer.Typer) -> None:
    app.command()(plan)
