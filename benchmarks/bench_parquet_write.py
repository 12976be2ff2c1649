"""Writing a partition: Parquet with a dictionary on every column (pyarrow's default) or on doc_id only.

Parquet dictionary-encodes every column unless told otherwise. A store partition's chunk ids,
texts and vectors are all distinct, so their dictionaries are built and then thrown away (the
writer falls back to plain encoding once a dictionary outgrows its page), and the vectors'
floats are the worst case. ``embedlab.store.DICTIONARY_COLUMNS`` keeps a dictionary for
``doc_id`` alone, the one column whose values repeat. This script writes the same partitions
both ways through ``Store.write_partition`` (Parquet + FAISS shard, sha256s, atomic writes with
fsync), in turn, and times the Parquet encoding alone as well, at the vector widths of the
near-free test encoder (32), all-MiniLM-L6-v2 (384) and bge-base (768). The partitions are
Wikipedia vital articles' chunks, 620 to a partition as the pipeline cuts them.

    .venv/bin/python benchmarks/bench_parquet_write.py [--repeats 7] [--partitions 8]
"""

from __future__ import annotations

import gzip
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import embedlab.store as store_module  # noqa: E402
from benchmarks.common import Results, busy_note, command_line, corpus_file, in_turn, markdown_table, parser  # noqa: E402
from embedlab.store import Store  # noqa: E402

ROWS = 620  # chunks in one partition of the 1-layer encoder's pipeline on this corpus
PEER = True  # pyarrow's use_dictionary default: every column


def partitions(src: Path, n: int) -> list[dict]:
    docs = [json.loads(x) for x in gzip.open(src, "rt", encoding="utf-8")][: n * ROWS]
    out = []
    for p in range(n):
        part = docs[p * ROWS:(p + 1) * ROWS]
        texts = [(d.get("title", "") + " " + d["text"]).strip() for d in part]
        out.append({"chunk_id": [f"{d['_id']}#0" for d in part], "doc_id": [d["_id"] for d in part],
                    "chunk_index": np.zeros(len(part), np.int32), "char_start": np.zeros(len(part), np.int64),
                    "char_end": np.array([len(t) for t in texts], np.int64),
                    "n_tokens": np.array([len(t) // 5 for t in texts], np.int32), "text": texts,
                    "doc_sha256": [hashlib.sha256(t.encode()).digest() for t in texts]})
    return out


def parquet_only(columns: dict, vectors: np.ndarray, dictionary) -> tuple[float, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    flat = pa.array(vectors.reshape(-1))
    table = pa.table({**columns, "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=len(vectors), use_dictionary=dictionary)
    return time.perf_counter() - t0, sink.tell()


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--corpus", default="wikipedia-vital-en", help="a folder under the data dir")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--partitions", type=int, default=8)
    args = ap.parse_args()
    results = Results("parquet_write", args.results, device=None)
    parts = partitions(corpus_file(args.corpus), args.partitions)
    ours = store_module.DICTIONARY_COLUMNS
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-parquet-") as tmp:
        store = Store(Path(tmp) / "store")
        store.root.mkdir()
        for dim in (32, 384, 768):
            rng = np.random.default_rng(dim)
            vecs = [rng.standard_normal((ROWS, dim)).astype(np.float32) for _ in parts]

            def write(dictionary) -> dict:
                store_module.DICTIONARY_COLUMNS = dictionary
                t0 = time.perf_counter()
                for i, (cols, v) in enumerate(zip(parts, vecs)):
                    store.write_partition(i, cols, v)
                whole = (time.perf_counter() - t0) / len(parts)
                enc = [parquet_only(c, v, dictionary) for c, v in zip(parts, vecs)]
                return {"whole": whole, "parquet": statistics.mean(e[0] for e in enc),
                        "bytes": statistics.mean(e[1] for e in enc)}

            runs = in_turn({"every column": lambda: write(PEER), "doc_id only": lambda: write(ours)}, args.repeats)
            store_module.DICTIONARY_COLUMNS = ours
            med = {k: {f: statistics.median(r[f] for r in v) for f in ("whole", "parquet", "bytes")}
                   for k, v in runs.items()}
            peer, mine = med["every column"], med["doc_id only"]
            rows.append([str(dim), f"{peer['parquet'] * 1e3:.2f}", f"{mine['parquet'] * 1e3:.2f}",
                         f"**{peer['parquet'] / mine['parquet']:.2f}x**", f"{peer['whole'] * 1e3:.2f}",
                         f"{mine['whole'] * 1e3:.2f}", f"{peer['whole'] / mine['whole']:.2f}x",
                         f"{peer['bytes'] / 1e3:,.0f}", f"{mine['bytes'] / 1e3:,.0f}"])
    table = markdown_table(["vector width", "Parquet ms, dictionary on every column", "Parquet ms, doc_id only",
                            "speed-up", "whole write ms (Parquet + FAISS + sha256 + fsync), every column",
                            "whole write ms, doc_id only", "speed-up", "kB, every column", "kB, doc_id only"], rows)
    intro = (f"`{args.corpus}`: {args.partitions} partitions of {ROWS} chunks (one chunk per article, its text "
             f"stored), random vectors; per partition, medians of {args.repeats} rounds taken in turn. "
             "The store's writes go to this machine's disk (ext4), each file fsynced." + busy_note(results.load_before))
    results.write_markdown("Partition writes: Parquet dictionaries", intro, table, command_line())


if __name__ == "__main__":
    main()
