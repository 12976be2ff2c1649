"""Number formats on the CPU: speed, closeness to fp32 and retrieval quality, against sentence-transformers.

    .venv/bin/python benchmarks/bench_cpu_precision.py [--docs 300] [--repeats 3] [--pipeline-docs 600]
        [--pipeline-repeats 3] [--no-compiled] [--no-ndcg] [--full-pipeline]

Needs the ``bench`` extra (onnx, onnxruntime) for the ONNX Runtime rows.

Part 1, in this process, on --docs SciFact documents (title + text) cut at 256 tokens, with the
same torch / ONNX Runtime threads (2 unless --threads): sentence-transformers with torch fp32
(batch 32), its ONNX backend in fp32 and dynamically quantized to qint8 as
``export_dynamic_quantized_onnx_model(model, "avx512_vnni")`` does (rebuilt in st_onnx.py, since
optimum-onnx does not run on transformers 5), and embedlab's encoder at fp32, bf16 and int8,
eager and torch.compile'd. Every encoder takes texts (tokenizing is timed). Each row is warmed up
once, then the rows are timed in turn, --repeats rounds, and the median is reported: the machine
is shared, so compared runs alternate. Cosines are to sentence-transformers' fp32 vectors.

For every row the whole SciFact corpus (5,183 documents, cut at 256 tokens as ``--truncate``
does) and its 300 test queries are then encoded by the same encoder, and nDCG@10 is computed
in-process with embedlab's metrics (exact inner-product search, a document never retrieves
itself, as ``embedlab evaluate``); "all chunks" cosines are to embedlab's fp32 vectors of the
whole corpus.

Part 2, whole processes: ``embedlab embed --truncate`` on --pipeline-docs documents at the
default dtype (auto), --dtype fp32 (the old default) and --dtype int8, taken in turn, median of
--pipeline-repeats. With --full-pipeline also the whole corpus at auto and fp32 (one run each,
alternated), evaluated with ``embedlab evaluate``.

Prints the tables and writes benchmarks/results/cpu_precision.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import DATA, Results, markdown_table  # noqa: E402
from embedlab.beir import load_split  # noqa: E402
from embedlab.config import DEFAULT_MODEL, EncodeConfig  # noqa: E402
from embedlab.encoder import Encoder, describe_model  # noqa: E402
from embedlab.hardware import cpu_flags  # noqa: E402
from embedlab.metrics import ir_metrics  # noqa: E402

SCIFACT = DATA / "scifact"
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def scifact_texts() -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            ids.append(str(d["_id"]))
            texts.append((d.get("title", "") + " " + d["text"]).strip())
    return ids, texts


def ndcg10(encode: Callable[[list[str]], np.ndarray], doc_ids: list[str], docs: np.ndarray) -> float:
    """nDCG@10 on SciFact's test split of ``docs`` (the corpus' vectors), queries encoded by ``encode``."""
    split = load_split(SCIFACT, "test", set(doc_ids))
    qids = sorted(split.queries)
    scores = encode([split.queries[q] for q in qids]) @ docs.T
    run = {}
    for q, row in zip(qids, scores):
        top = np.argsort(-row, kind="stable")[:101]
        run[q] = {doc_ids[i]: float(row[i]) for i in top if doc_ids[i] != q}
    return ir_metrics(split.qrels, run, ("ndcg@10",))[0]["ndcg@10"]


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def encoders(args, tmp: Path) -> dict[str, Callable[[list[str]], np.ndarray]]:
    """Row name -> encode(texts) -> unit vectors, every one loaded (and compiled) before any timing."""
    from sentence_transformers import SentenceTransformer

    import st_onnx

    torch.set_num_threads(args.threads)
    path = describe_model(DEFAULT_MODEL).path
    st = SentenceTransformer(path, device="cpu")
    rows: dict[str, Callable] = {
        "sentence-transformers, torch fp32, batch 32":
            lambda t: st.encode(t, batch_size=32, normalize_embeddings=True)}
    try:
        fp32 = st_onnx.export_onnx(path, tmp / "model.onnx")
        q8 = st_onnx.quantize_avx512_vnni(fp32, tmp / "model_qint8_avx512_vnni.onnx")
        for name, path in (("ONNX fp32", fp32), ("ONNX qint8 (avx512_vnni)", q8)):
            ort = st_onnx.OnnxEncoder(path, st.tokenizer, st.max_seq_length, args.threads)
            rows[f"sentence-transformers, {name}"] = lambda t, ort=ort: ort.encode(t, batch_size=32)
    except ImportError as e:
        print(f"no ONNX Runtime rows ({e}); install the bench extra", file=sys.stderr)
    for dtype in ("fp32", "bf16", "int8"):
        for compiled in (False, True) if dtype in args.compiled_dtypes.split(",") else (False,):
            t0 = time.perf_counter()
            enc = Encoder(EncodeConfig(dtype=dtype, device="cpu", torch_threads=args.threads, compile=compiled))
            note = f" (load + compile {time.perf_counter() - t0:.0f} s)" if compiled else ""
            if compiled and not enc.compiled:
                note = f" (compile failed: {enc.compile_error}; eager)"
            rows[f"embedlab {dtype}, {'compiled' if compiled else 'eager'}{note}"] = enc.encode_texts
    return rows


def in_process(args, texts: list[str], doc_ids: list[str], corpus: list[str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        rows = encoders(args, Path(tmp))
        sample = texts[: args.docs]
        vectors = {name: encode(sample) for name, encode in rows.items()}  # the warm-up
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.repeats):
            for name, encode in rows.items():
                t0 = time.perf_counter()
                encode(sample)
                times[name].append(len(sample) / (time.perf_counter() - t0))
                print(f"  {name}: {times[name][-1]:.1f} docs/s", file=sys.stderr, flush=True)
        quality: dict[str, tuple[float, float, float]] = {}
        if args.ndcg:
            ref = None
            for name, encode in sorted(rows.items(), key=lambda kv: "embedlab fp32, eager" not in kv[0]):
                if not any(k in name for k in args.ndcg_rows.split("|")):
                    continue
                docs = encode(corpus)
                ref = docs if ref is None else ref
                c = cos(docs, ref)
                quality[name] = (ndcg10(encode, doc_ids, docs), float(c.min()), float(c.mean()))
                print(f"  {name}: nDCG@10 {quality[name][0]:.4f}", file=sys.stderr, flush=True)
    base_name = next(iter(rows))
    base = statistics.median(times[base_name])
    table = []
    for name in rows:
        med = statistics.median(times[name])
        c = cos(vectors[name], vectors[base_name])
        q = quality.get(name)
        table.append([name, f"{med:.1f}", f"{min(times[name]):.1f}-{max(times[name]):.1f}", f"{med / base:.2f}",
                      f"{c.min():.4f}", f"{c.mean():.5f}",
                      f"{100 * q[0]:.2f}" if q else "", f"{q[1]:.4f}" if q else "", f"{q[2]:.5f}" if q else ""])
    ort = [r for r in table if "qint8" in r[0]]
    if ort:
        for r in table:
            if r[0].startswith("embedlab int8"):
                r[0] += f"; {float(r[1]) / float(ort[0][1]):.2f}x ONNX qint8"
    return markdown_table(["backend", "docs/s (median)", "min-max", "x ST torch fp32", "min cos to ST fp32",
                           "mean cos", "SciFact nDCG@10", "min cos to embedlab fp32, nDCG corpus", "mean"],
                          table)


def embed(corpus: Path, out: Path, extra: list[str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "embedlab"), "embed", str(corpus), "--out", str(out),
                           "--truncate", "--no-progress", "--json", *extra], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"embedlab embed {' '.join(extra)} failed: {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def whole_processes(args, texts_n: int) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt") as src, open(corpus, "w") as dst:
            dst.writelines(line for line, _ in zip(src, range(texts_n)))
        settings = {"default (auto)": [], "--dtype fp32 (the old default)": ["--dtype", "fp32"],
                    "--dtype int8": ["--dtype", "int8"]}
        walls: dict[str, list[float]] = {k: [] for k in settings}
        dtype: dict[str, str] = {}
        for i in range(args.pipeline_repeats):
            for name, extra in settings.items():
                out = Path(tmp) / f"out-{i}-{len(walls[name])}-{name[:6].strip('-')}"
                wall, summary = embed(corpus, out, extra)
                walls[name].append(wall)
                dtype[name] = summary["encoder"]["dtype"]
                shutil.rmtree(out)
                print(f"  embed {name}: {wall:.1f} s", file=sys.stderr, flush=True)
        fp32 = statistics.median(walls["--dtype fp32 (the old default)"])
        for name in settings:
            med = statistics.median(walls[name])
            rows.append([f"embedlab embed {name}: {dtype[name]}", texts_n, f"{med:.1f}",
                         f"{min(walls[name]):.1f}-{max(walls[name]):.1f}", f"{texts_n / med:.1f}",
                         f"{fp32 / med:.2f}", ""])
        if args.full_pipeline:
            rows += full_corpus(Path(tmp))
    return markdown_table(["whole process", "docs", "wall s (median)", "min-max", "docs/s", "x fp32",
                           "SciFact nDCG@10"], rows)


def full_corpus(tmp: Path) -> list[list[object]]:
    from embedlab.evaluate import evaluate

    rows = []
    for name, extra in (("--dtype fp32", ["--dtype", "fp32"]), ("default (auto)", [])):
        out = tmp / f"full-{len(rows)}"
        wall, summary = embed(SCIFACT / "corpus.jsonl.gz", out, extra)
        ndcg = evaluate(out, SCIFACT, write=False).metrics["ndcg@10"]
        rows.append([f"embedlab embed {name}, whole SciFact: {summary['encoder']['dtype']}", summary["documents"],
                     f"{wall:.1f}", "", f"{summary['documents'] / wall:.1f}", "", f"{100 * ndcg:.2f}"])
        shutil.rmtree(out)
    rows[1][5] = f"{float(rows[0][2]) / float(rows[1][2]):.2f}"
    rows[0][5] = "1.00"
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pipeline-docs", type=int, default=600)
    p.add_argument("--pipeline-repeats", type=int, default=3)
    p.add_argument("--compiled-dtypes", default="fp32,bf16,int8", help="embedlab rows also run compiled; '' for none")
    p.add_argument("--ndcg-docs", type=int, default=None,
                   help="nDCG on a SciFact subset: every document a test query judges plus the first N others "
                        "(the same subset for every row); default: the whole corpus")
    p.add_argument("--no-ndcg", dest="ndcg", action="store_false")
    p.add_argument("--ndcg-rows", default="embedlab fp32, eager|embedlab bf16, eager|embedlab int8, eager|qint8",
                   help="rows (|-separated substrings) whose whole-corpus nDCG and cosines are measured; "
                        "embedlab fp32, eager is the cosine reference")
    p.add_argument("--full-pipeline", action="store_true")
    args = p.parse_args()
    results = Results("cpu_precision")
    load = Path("/proc/loadavg").read_text().split()[0]
    doc_ids, corpus = scifact_texts()
    ndcg_ids, ndcg_corpus = doc_ids, corpus
    if args.ndcg_docs is not None:
        judged = {d for q in load_split(SCIFACT, "test", set(doc_ids)).qrels.values() for d in q}
        keep = [i for i, d in enumerate(doc_ids) if d in judged]
        keep += [i for i, d in enumerate(doc_ids) if d not in judged][: args.ndcg_docs]
        ndcg_ids, ndcg_corpus = [doc_ids[i] for i in sorted(keep)], [corpus[i] for i in sorted(keep)]
    part1 = in_process(args, corpus, ndcg_ids, ndcg_corpus)
    part2 = whole_processes(args, args.pipeline_docs) if args.pipeline_repeats else ""
    flags = cpu_flags()
    features = ", ".join(f for f in FEATURES if f in flags) or "none of " + ", ".join(FEATURES)
    intro = (f"Part 1, one process, {args.threads} threads: the first {args.docs} SciFact documents cut at 256 "
             f"tokens, each row warmed up, then timed in turn ({args.repeats} rounds, median; the 2-core machine "
             "is shared with other work, so compared runs alternate). nDCG@10 and the all-chunks cosines: the "
             f"{'whole SciFact corpus' if args.ndcg_docs is None else f'SciFact subset of {len(ndcg_ids):,} documents (every judged one plus {args.ndcg_docs:,} others)'} "
             "(--truncate) and its test queries encoded by the same row (rows matching "
             f"{args.ndcg_rows!r}). Part 2: whole "
             f"`embedlab embed --truncate` processes, taken in turn. CPU features: {features}. Load average "
             f"at the start: {load}, at the end: {Path('/proc/loadavg').read_text().split()[0]}.")
    command = "benchmarks/bench_cpu_precision.py " + " ".join(sys.argv[1:])
    results.write_markdown("Number formats on the CPU against sentence-transformers", intro,
                           part1 + ("\n\n" + part2 if part2 else ""), command)


if __name__ == "__main__":
    main()
