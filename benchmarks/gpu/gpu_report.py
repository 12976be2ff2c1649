"""Markdown of the GPU benchmark results documents (encode_gpu.json, embed_gpu.json)."""

from __future__ import annotations

from typing import Any

from gpu_common import fmt, markdown_table


def _pct(v: Any) -> str:
    return "" if v is None else f"{100 * v:.1f}%"


def best_rows(doc: dict[str, Any]) -> dict[tuple[str, str], dict]:
    """The fastest chunk row per (arch, dtype)."""
    best: dict[tuple[str, str], dict] = {}
    for r in doc.get("rows", []):
        k = (r["arch"], r["dtype"])
        if r.get("chunks_per_s") and (k not in best or r["chunks_per_s"] > best[k]["chunks_per_s"]):
            best[k] = r
    return best


def _vs_fp32(doc: dict[str, Any], arch: str, dtype: str, fp32: dict | None) -> str:
    """The half-precision rate over fp32's at fp32's fastest measured batch (same batch, same texts)."""
    if not fp32:
        return ""
    same = [r for r in doc.get("rows", []) if r["arch"] == arch and r["dtype"] == dtype
            and r["batch"] == fp32["batch"] and r.get("chunks_per_s")]
    if not same:
        return ""
    return (f", {dtype} / fp32 = {same[0]['chunks_per_s'] / fp32['chunks_per_s']:.2f}x at batch {fp32['batch']}, "
            "the largest fp32 batch measured (goal 2.5x)")


def summary_lines(doc: dict[str, Any]) -> list[str]:
    best = best_rows(doc)
    out = []
    for arch, goal in (("minilm", 0.30), ("bge-base", 0.45)):
        half = [r for (a, d), r in best.items() if a == arch and d in ("fp16", "bf16")]
        if half:
            r = max(half, key=lambda x: x["chunks_per_s"])
            ratio = _vs_fp32(doc, arch, r["dtype"], best.get((arch, "fp32")))
            out.append(f"- {arch}: best {r['dtype']} {r['chunks_per_s']:,.0f} chunks/s at batch {r['batch']}, "
                       f"MFU {_pct(r['mfu'])} (goal {goal:.0%}){ratio}")
    if "vs_sentence_transformers_fp16" in doc:
        out.append(f"- x sentence-transformers fp16: {doc['vs_sentence_transformers_fp16']:.2f} (goal 1.5; "
                   f"{doc.get('vs_sentence_transformers_fp16_note', '')})")
    par = doc.get("parity", {})
    for d in ("fp16", "bf16"):
        if isinstance(par.get(d), dict) and "min_cos_chunks" in par[d]:
            out.append(f"- parity {d}: min cosine to CPU fp32 {par[d]['min_cos_chunks']:.6f} over "
                       f"{par['chunks']} chunks (goal 0.999), {par[d]['min_cos_queries']:.6f} over queries")
    return out


def _rows_table(rows: list[dict]) -> str:
    return markdown_table(
        ["model", "dtype", "batch", "chunks/s", "min-max", "tokens/s", "TFLOP/s", "MFU", "of matmul ceiling",
         "peak MB"],
        [[r["arch"], r["dtype"], r["batch"], fmt(r["chunks_per_s"]),
          f"{r['chunks_per_s_min']:,.0f}-{r['chunks_per_s_max']:,.0f}", fmt(r["tokens_per_s"]),
          fmt(r["model_tflops"], ".1f"), _pct(r["mfu"]), _pct(r["of_matmul_ceiling"]), fmt(r["peak_mem_mb"])]
         for r in rows])


def render_encoder(doc: dict[str, Any]) -> str:
    lines = [f"# The encoder on a GPU: {doc.get('device', '?')}", ""]
    if doc.get("dry_run"):
        lines += ["**Dry run** (tiny models and sizes on the CPU): checks the script, measures nothing.", ""]
    lines += [f"status: {doc.get('status')}, wall {doc.get('wall_seconds', '?')} s of a {doc.get('budget_seconds')} s "
              f"budget; command: `{doc.get('command', '')}`", ""]
    m = doc.get("machine", {})
    lines += [f"machine: {m.get('device')}, torch {m.get('torch')} (CUDA {m.get('cuda')}), transformers "
              f"{m.get('transformers')}, {m.get('cores')} CPU cores ({m.get('cpu')})", ""]
    ceil = doc.get("matmul_ceiling_flops", {})
    if ceil:
        lines += ["matmul ceiling measured in this run (" + doc.get("matmul_ceiling_shape", "") + "): "
                  + ", ".join(f"{k} {v / 1e12:,.1f} TFLOP/s" for k, v in ceil.items())
                  + f"; datasheet dense fp16/bf16 peak: {fmt((doc.get('datasheet_peak_flops') or 0) / 1e12, ',.0f')} "
                  "TFLOP/s (MFU is against it for every dtype)", ""]
    if doc.get("data"):
        lines += [f"data: {doc['data']['source']}", ""]
    s = summary_lines(doc)
    if s:
        lines += ["## Against the targets", "", *s, ""]
    if doc.get("rows"):
        lines += ["## SciFact chunks (256 tokens), embedlab's default CUDA path", "", _rows_table(doc["rows"]), ""]
    if doc.get("fits"):
        lines += ["r(b) = r_max * b / (b + b_half), fitted with embedlab's sweep fit; knee: smallest batch "
                  "reaching 90% of r_max:", "",
                  markdown_table(["model/dtype/texts", "r_max chunks/s", "b_half", "knee (fit)", "knee (measured)",
                                  "fit rel. RMS", "points"],
                                 [[k, fmt(f["r_max"]), fmt(f["b_half"], ".1f"), f["knee"], f["knee_measured"],
                                   _pct(f["rel_rms"]), f["points"]] for k, f in doc["fits"].items()]), ""]
    if doc.get("query_rows"):
        lines += ["## SciFact queries (short texts)", "", _rows_table(doc["query_rows"]), ""]
    st = doc.get("sentence_transformers")
    if st:
        lines += [f"## sentence-transformers at {st['dtype']} on the same {st['texts']} chunk texts ({st['what']})", ""]
        rows = []
        for k, v in st.items():
            if isinstance(v, dict) and "st_best" in v:
                rows.append([k, ", ".join(f"{b}: {r:,.0f}" for b, r in v["st_chunks_per_s"].items()),
                             ", ".join(f"{b}: {r:,.0f}" for b, r in v["embedlab_chunks_per_s"].items()),
                             f"{v['ratio']:.2f}", fmt(v["embedlab_pretokenized_chunks_per_s"]),
                             f"{v['min_cos_to_st']:.6f}"])
        lines += [markdown_table(["model", "ST chunks/s by batch", "embedlab chunks/s by batch", "best / best",
                                  "embedlab, pre-tokenized", "min cos to ST"], rows), ""]
    par = doc.get("parity")
    if par:
        lines += ["## Parity with CPU fp32 (real all-MiniLM-L6-v2 weights)", "",
                  f"{par.get('status', '')} reference: {par.get('reference', '')}; weights {par.get('weights', '')}", ""]
        rows = [[d, fmt(v.get("min_cos_chunks"), ".6f"), fmt(v.get("mean_cos_chunks"), ".6f"),
                 fmt(v.get("min_cos_queries"), ".6f"), v.get("status", "ok")]
                for d, v in par.items() if isinstance(v, dict)]
        if rows:
            lines += [markdown_table(["dtype", "min cos chunks", "mean cos chunks", "min cos queries", "status"],
                                     rows), ""]
    if doc.get("variants"):
        lines += ["## Tuning variants (measured, not adopted)", "",
                  markdown_table(["model", "dtype", "batch", "variant", "chunks/s", "x default", "min cos to default",
                                  "setup s", "status"],
                                 [[v["model"], v["dtype"], v["batch"], v["variant"], fmt(v["chunks_per_s"]),
                                   fmt(v["vs_default"], ".2f"), fmt(v["min_cos_to_default"], ".6f"),
                                   v["setup_seconds"], v["status"]] for v in doc["variants"]]), ""]
    for key, title in (("skipped", "Not measured"), ("errors", "Errors")):
        if doc.get(key):
            lines += [f"## {title}", ""]
            lines += [f"- {x.get('section') or ' '.join(str(x.get(k, '')) for k in ('arch', 'dtype', 'texts', 'batch'))}: "
                      f"{x.get('status') or x.get('error')}" for x in doc[key]]
            lines.append("")
    return "\n".join(lines)


def render_e2e(doc: dict[str, Any]) -> str:
    lines = [f"# The whole embed on one GPU: {doc.get('device', '?')}", ""]
    if doc.get("dry_run"):
        lines += ["**Dry run** (tiny model, CPU LocalCluster): checks the script, measures nothing.", ""]
    lines += [f"status: {doc.get('status')}, wall {doc.get('wall_seconds', '?')} s; command: `{doc.get('command', '')}`", ""]
    if "chunks_per_s" in doc:
        lines += [f"- end to end {fmt(doc['chunks_per_s'])} chunks/s = "
                  f"{fmt(doc.get('e2e_over_encoder_alone'), '.2f')} of the encoder alone "
                  f"({fmt(doc.get('encoder_alone_chunks_per_s'))} chunks/s; goal 0.90); GPU busy "
                  f"{fmt(doc.get('gpu_busy'), '.2f')} (goal 0.90); GPU codes equal CPU: {doc.get('gpu_codes_equal_cpu')}", ""]
    if doc.get("runs"):
        lines += ["## `embedlab embed` runs", "",
                  markdown_table(["corpus", "workers", "codes", "chunks", "splits", "wall s", "start-up s", "encode s",
                                  "chunks/s", "chunks/s (encode phase)", "encoder busy", "input wait s",
                                  "writer wait s", "GPU busy (encode)", "GPU busy (process)", "store bytes/chunk",
                                  "status"],
                                 [[r["corpus"], r["workers"], r.get("codes", "none"), fmt(r.get("chunks")),
                                   fmt(r.get("splits")), fmt(r.get("wall_seconds"), ".1f"),
                                   fmt(r.get("startup_seconds"), ".1f"), fmt(r.get("encode_wall_seconds"), ".1f"),
                                   fmt(r.get("chunks_per_s")),
                                   fmt(r["chunks"] / r["encode_wall_seconds"] if r.get("encode_wall_seconds") else None),
                                   fmt(r.get("encoder_busy"), ".2f"), fmt(r.get("input_wait_seconds"), ".1f"),
                                   fmt(r.get("writer_wait_seconds"), ".1f"),
                                   fmt(r.get("gpu_busy_encode"), ".2f"), fmt(r.get("gpu_busy_process"), ".2f"),
                                   fmt(r.get("store_bytes_per_chunk")), r.get("status")] for r in doc["runs"]]), ""]
    if doc.get("encoder_alone"):
        lines += ["encoder alone (same model, dtype and batch, in one process, pre-tokenized): "
                  + ", ".join(f"{k}: {fmt(v)} chunks/s" for k, v in doc["encoder_alone"].items()), ""]
    if doc.get("tokens_per_chunk"):
        lines += ["mean tokens per chunk: " + ", ".join(f"{k}: {v:.0f}" for k, v in doc["tokens_per_chunk"].items()), ""]
    if doc.get("codes"):
        c = doc["codes"]
        lines += ["## Codes made on the device", "",
                  markdown_table(["what", "value"], [[k, v] for k, v in c.items()]), ""]
    if doc.get("search"):
        s = doc["search"]
        lines += ["## Exact search on the device against CPU FAISS", "",
                  markdown_table(["what", "value"], [[k, v] for k, v in s.items()]), ""]
    for key, title in (("skipped", "Not measured"), ("errors", "Errors")):
        if doc.get(key):
            lines += [f"## {title}", ""] + [f"- {x.get('section', '')}: {x.get('status') or x.get('error')}"
                                            for x in doc[key]] + [""]
    return "\n".join(lines)
