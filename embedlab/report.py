"""Reports: markdown tables, tidy CSV rows, and the line that names the machine a number came from.

Every results table, experiment record and benchmark file is written through these, so a table
looks the same wherever it is printed and every measurement names its machine and device the
same way (from :func:`embedlab.hardware.machine_info`).

Example:
    >>> print(markdown_table(["batch", "chunks/s"], [[1, "10.5"], [64, "120.0"]]))
    | batch | chunks/s |
    |---|---|
    | 1 | 10.5 |
    | 64 | 120.0 |
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], *, align: bool = False) -> str:
    """A GitHub markdown table of ``rows`` (each cell through ``str``).

    Args:
        header: column names.
        rows: one sequence of cells per row, as many as ``header``.
        align: pad every column to its widest cell and right-align it (``---:``), for tables
            read as plain text as well (the planner's); else the compact form.
    """
    body = [[str(c) for c in r] for r in rows]
    if not align:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                          *("| " + " | ".join(r) + " |" for r in body)])
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line, rule, *("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"
                                    for r in body)])


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Tidy CSV: one line per row, one column per key (default: every key, in first-seen order).

    A missing key or ``None`` is an empty cell.
    """
    cols = list(columns) if columns is not None else list(dict.fromkeys(c for r in rows for c in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: ("" if r.get(k) is None else r[k]) for k in cols} for r in rows)
    return buf.getvalue()


def machine_line(info: Mapping[str, Any]) -> str:
    """One line naming the machine and device of :func:`embedlab.hardware.machine_info`.

    Example: ``AMD EPYC, 2 cores, 24 GiB; Python 3.11.7, torch 2.13.0+cpu (2 threads), device cpu``.
    """
    hw = [str(info.get("cpu") or "unknown CPU")]
    if info.get("cores"):
        hw.append(f"{info['cores']} cores")
    if info.get("memory_gib"):
        hw.append(f"{info['memory_gib']:.0f} GiB")
    if info.get("gpu"):
        hw.append(f"GPU {info['gpu']}")
    sw = [f"Python {info['python']}"] if info.get("python") else []
    if info.get("torch"):
        sw.append(f"torch {info['torch']}" + (f" ({info['threads']} threads)" if info.get("threads") else ""))
    if info.get("device"):
        sw.append(f"device {info['device']}")
    if info.get("faiss_threads"):
        sw.append(f"FAISS threads {info['faiss_threads']}")
    return ", ".join(hw) + ("; " + ", ".join(sw) if sw else "")


def machine_slug(info: Mapping[str, Any]) -> str:
    """A short file-name-safe name of the machine: the GPU where one was used, else the CPU and cores.

    Example: ``amd-epyc-2c``, ``nvidia-h100-80gb-hbm3``.
    """
    if info.get("gpu"):
        name = str(info["gpu"])
    else:
        cpu = re.sub(r"\((r|tm)\)|\bcpu\b|@.*$|\d+-core processor", " ", str(info.get("cpu") or "cpu"),
                     flags=re.IGNORECASE)
        name = f"{cpu} {info['cores']}c" if info.get("cores") else cpu
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "machine"
