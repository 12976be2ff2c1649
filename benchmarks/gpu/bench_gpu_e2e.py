"""The whole `embedlab embed` on one GPU (issue 22, as far as the current input path allows):
end to end against the encoder alone, GPU busy fraction, one vs two workers, codes made on the
GPU, and exact search on the GPU against CPU FAISS, in one time-boxed run.

    python benchmarks/gpu/bench_gpu_e2e.py --out OUT [--budget 420] [--dry-run]

Run through ``benchmarks/gpu/run_device_e2e.sh`` on the device machine, with the wheels of
``carry/e2e/wheels`` installed (dask, distributed, dask-cuda, faiss-cpu). The model is
all-MiniLM-L6-v2's architecture with random weights (the equality checks compare GPU and CPU
on the same vectors). Each embed is a process of its own (`python -m embedlab.cli embed ...
--dtype fp16`), timed from its start to its exit, while NVML samples the GPU's utilization
every 50 ms; the store's _summary.json says how the run split into start-up and encode phase.
Wikipedia vital articles are copied (new ids) until the run should last --target-seconds at the
slower of the encoder alone and the driver's chunking rate, both measured first. The dry run
does the same on the CPU with a LocalCluster and a tiny model.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from gpu_common import ARCHS, CARRY, REPO, Budget, Results, build_model_dir, cuda_device_info, timed  # noqa: E402
from gpu_report import render_e2e  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--carry", type=Path, default=CARRY / "e2e")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 420; dry 600)")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--batch-size", type=int, default=None, help="rows per batch (default 512; dry 16)")
    p.add_argument("--partition-tokens", type=int, default=None, help="default 1,048,576 (4,096 chunks); dry 4,096")
    p.add_argument("--target-seconds", type=float, default=None, help="Wikipedia run length (default 60; dry 3)")
    p.add_argument("--workers", default="1,2", help="workers per GPU to compare on Wikipedia")
    p.add_argument("--split-bytes", type=int, default=None, help="embed --split-bytes (default: embed's)")
    p.add_argument("--copies", type=int, default=None, help="Wikipedia copies (default: sized by --target-seconds)")
    p.add_argument("--skip", default="", help="sections to leave out: codes,search,scifact,codes-run")
    a = p.parse_args(argv)
    a.budget = a.budget or (600.0 if a.dry_run else 420.0)
    a.batch_size = a.batch_size or (16 if a.dry_run else 512)
    a.partition_tokens = a.partition_tokens or (4096 if a.dry_run else 1 << 20)
    a.target_seconds = a.target_seconds or (3.0 if a.dry_run else 60.0)
    a.workers = [int(w) for w in a.workers.split(",")]
    a.skip = set(filter(None, a.skip.split(",")))
    return a


class GpuSampler(threading.Thread):
    """GPU utilization (NVML's percent of time a kernel ran) every ``every`` seconds, timestamped."""

    def __init__(self, every: float = 0.05):
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML (no GPU, or nvidia-ml-py missing): the fraction stays unknown
            self.nvml = self.handle = None

    def run(self) -> None:
        while self.handle is not None and not self.stop.is_set():
            self.samples.append((time.perf_counter(), self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu))
            time.sleep(self.every)

    def busy(self, t0: float, t1: float) -> float | None:
        vals = [u for t, u in self.samples if t0 <= t <= t1]
        return float(np.mean(vals)) / 100 if vals else None


class E2E:
    def __init__(self, a: argparse.Namespace):
        import torch

        self.a, self.torch = a, torch
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.dtype = "fp16" if self.cuda else "fp32"
        self.budget = Budget(a.budget)
        self.res = Results(a.out, "embed_gpu", render_e2e)
        self.info = cuda_device_info()
        self.tmp = Path(tempfile.mkdtemp(prefix="embedlab-e2e-"))
        self.model = build_model_dir(ARCHS["minilm"], self.tmp / "minilm", tiny=a.dry_run)
        self.corpora: dict[str, Path] = {}
        self.ids: dict[str, list] = {}
        self.chunk_ids: list[str] = []
        self.rates: dict[str, float] = {}

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def section(self, name: str, fn, *args) -> None:
        import traceback

        print(f"[{self.budget.elapsed():6.1f} s] {name}", flush=True)
        try:
            fn(*args)
        except Exception as e:
            self.res.append("errors", {"section": name, "error": f"{type(e).__name__}: {e}",
                                       "traceback": traceback.format_exc()[-3000:]})
            print(f"  {name} failed: {type(e).__name__}: {e}", flush=True)

    def encoder(self):
        from embedlab.config import EncodeConfig
        from embedlab.encoder import cached_encoder

        return cached_encoder(EncodeConfig(model=str(self.model), dtype=self.dtype, device=self.device,
                                           batch_size=self.a.batch_size))


def find_corpora(e: E2E) -> None:
    shared = REPO.parent / "shared" / "data"
    for name in ("scifact", "wikipedia-vital-en"):
        for root in (e.a.carry / "data", shared):
            if (root / name / "corpus.jsonl.gz").is_file():
                e.corpora[name] = root / name / "corpus.jsonl.gz"
                break
        else:
            raise FileNotFoundError(f"{name}/corpus.jsonl.gz not in {e.a.carry}/data or {shared}")
        if e.a.dry_run:  # a few documents, so the split path runs whole corpora in seconds on a CPU
            lines = [ln for ln in gzip.open(e.corpora[name], "rt", encoding="utf-8") if ln.strip()][:DRY_DOCS]
            e.corpora[name] = e.tmp / f"{name}.jsonl"
            e.corpora[name].write_text("".join(lines), encoding="utf-8")
    e.res.update(corpora={k: str(v) for k, v in e.corpora.items()})


DRY_DOCS = 40


def chunk(e: E2E, name: str, limit: int | None) -> tuple[list, float]:
    """Chunks of a corpus as the driver makes them, and the driver's chunking rate (chunks/s)."""
    from embedlab.chunking import Chunker
    from embedlab.config import CorpusConfig
    from embedlab.corpus import Document, read_corpus
    from embedlab.encoder import describe_model, fast_tokenizer

    info = describe_model(str(e.model))
    t0 = time.perf_counter()
    docs = [r for r in read_corpus(CorpusConfig(path=e.corpora[name], limit=limit)) if isinstance(r, Document)]
    chunks, _ = Chunker(fast_tokenizer(info.path), info.max_seq_length, 32).chunk(docs)
    return chunks, len(chunks) / (time.perf_counter() - t0)


def encoder_alone(e: E2E) -> None:
    """The encoder the workers run (same model, dtype, batch), in this process, on each corpus's chunks."""
    limit = None
    enc = e.encoder()
    alone, driver = {}, {}
    for name in e.corpora:
        chunks, driver[name] = chunk(e, name, limit)
        ids = [c.input_ids for c in chunks]
        e.ids[name] = ids
        if name == "scifact":
            e.chunk_ids = [c.chunk_id for c in chunks]
        t = timed(lambda ids=ids: enc.encode_ids(ids), e.sync, min_seconds=0 if e.a.dry_run else 2.0)
        alone[name] = len(ids) / t["seconds"]
    e.rates = dict(alone)
    e.res.update(encoder_alone=alone, driver_chunking_chunks_per_s=driver,
                 chunks_per_corpus={k: len(v) for k, v in e.ids.items()}, batch_size=e.a.batch_size,
                 tokens_per_chunk={k: float(np.mean([len(x) for x in v])) if v else 0.0 for k, v in e.ids.items()},
                 dtype=e.dtype, partition_tokens=e.a.partition_tokens)


def wiki_copies(e: E2E) -> Path:
    """Wikipedia vital articles copied (ids suffixed ~N) until the run should last --target-seconds
    at the encode-phase rate the SciFact embed reached (workers read and tokenize: no driver rate)."""
    sci = [r for r in e.res.doc.get("runs", []) if r.get("status") == "ok" and r["corpus"] == "scifact"]
    measured = sci[0]["chunks"] / max(sci[0]["encode_wall_seconds"], 1e-3) if sci else 2000.0
    rate = min(e.rates["wikipedia-vital-en"], 1.5 * measured)
    per_copy = max(1, len(e.ids["wikipedia-vital-en"]))
    copies = e.a.copies or max(1, min(2000, round(e.a.target_seconds * rate / per_copy)))
    src = e.corpora["wikipedia-vital-en"]
    opener = gzip.open if src.suffix == ".gz" else open
    lines = [ln for ln in opener(src, "rt", encoding="utf-8") if ln.strip()]
    path = e.tmp / "wiki-copies.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for k in range(copies):
            for ln in lines:
                rec = json.loads(ln)
                rec["_id"] = f"{rec['_id']}~{k}"
                fh.write(json.dumps(rec) + "\n")
    e.res.update(wiki_copies=copies, wiki_expected_chunks=copies * per_copy,
                 wiki_rate_basis="min(encoder alone, 1.5 x SciFact embed encode-phase rate) chunks/s: "
                 + f"{rate:,.0f}")
    e.rates["wikipedia-vital-en copies"] = 0.25 * e.rates["wikipedia-vital-en"] if e.a.copies else rate
    return path


def embed_run(e: E2E, corpus_name: str, corpus: Path, workers: int, expected_chunks: int,
              codes: str = "") -> None:
    rate_guess = min(e.rates.get(corpus_name, e.rates.get(corpus_name.split(" ")[0], 1000.0)), 1e9)
    need = 40 + expected_chunks / max(rate_guess, 1.0) * 1.5
    run: dict[str, Any] = {"corpus": corpus_name, "workers": workers, "codes": codes or "none"}
    if not e.budget.fits(need, reserve=30):
        run["status"] = f"skipped: time budget (needs ~{need:.0f} s)"
        e.res.append("runs", run)
        return
    out = e.tmp / f"store-{corpus_name.split()[0]}-{workers}-{codes.replace(',', '-') or 'vectors'}"
    cmd = [sys.executable, "-m", "embedlab.cli", "embed", str(corpus), "--out", str(out), "--model", str(e.model),
           "--dtype", e.dtype, "--batch-size", str(e.a.batch_size), "--partition-tokens", str(e.a.partition_tokens),
           "--workers", str(workers), "--no-progress"] + (["--codes", codes] if codes else []) + (
               ["--split-bytes", str(e.a.split_bytes)] if e.a.split_bytes else [])
    sampler = GpuSampler()
    sampler.start()
    t0 = time.perf_counter()
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true"}  # workers tokenize on every core they have
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(60.0, e.budget.left() - 20), env=env)
    t1 = time.perf_counter()
    sampler.stop.set()
    sampler.join()
    run.update(command=" ".join(cmd[1:]), exit=proc.returncode, process_seconds=t1 - t0)
    summary_path = out / "_summary.json"
    if proc.returncode not in (0, 3) or not summary_path.is_file():
        run.update(status=f"failed (exit {proc.returncode})", stderr=proc.stderr[-2000:])
        e.res.append("runs", run)
        return
    s = json.loads(summary_path.read_text())
    start = t1 - s["wall_seconds"]  # the embed call's own start, inside the process
    enc0 = start + s["startup_seconds"]
    run.update(status="ok", chunks=s["chunks"], wall_seconds=s["wall_seconds"],
               startup_seconds=s["startup_seconds"], encode_wall_seconds=s["encode_wall_seconds"],
               forward_seconds=s["forward_seconds"], encoder_busy=s["encoder_busy"], splits=s.get("splits"),
               input_wait_seconds=s.get("input_wait_seconds"), writer_wait_seconds=s.get("writer_wait_seconds"),
               store_bytes_per_chunk=store_bytes(out) / max(s["chunks"], 1),
               chunks_per_s=s["chunks"] / (t1 - t0), chunks_per_s_embed_call=s["chunks_per_second"],
               process_start_to_embed_seconds=start - t0,
               after_encode_seconds=s["wall_seconds"] - s["startup_seconds"] - s["encode_wall_seconds"],
               gpu_busy_process=sampler.busy(t0, t1),
               gpu_busy_encode=sampler.busy(enc0, enc0 + s["encode_wall_seconds"]),
               gpu_samples=len(sampler.samples), cluster=s.get("cluster"))
    e.res.append("runs", run)


def store_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def embed_runs(e: E2E) -> None:
    sci = len(e.ids["scifact"])
    if "scifact" not in e.a.skip:
        e.section("embed scifact x1", embed_run, e, "scifact", e.corpora["scifact"], 1, sci)
    try:
        wiki = wiki_copies(e)
    except Exception as err:  # noqa: BLE001 - the other sections' results still come back
        e.res.append("errors", {"section": "wiki copies", "error": f"{type(err).__name__}: {err}"})
        return
    expected = e.res.doc["wiki_expected_chunks"]
    for w in e.a.workers:
        e.section(f"embed wikipedia x{w}", embed_run, e, "wikipedia-vital-en copies", wiki, w, expected)
    done = [r for r in e.res.doc.get("runs", []) if r.get("status") == "ok" and r["corpus"].startswith("wiki")]
    if done and "codes-run" not in e.a.skip:
        w = max(done, key=lambda r: r["chunks_per_s"])["workers"]
        e.section(f"embed wikipedia x{w} --codes binary,int8", embed_run, e, "wikipedia-vital-en copies", wiki, w,
                  expected, "binary,int8")
    runs = [r for r in e.res.doc.get("runs", []) if r.get("status") == "ok" and r["corpus"].startswith("wiki")
            and r["codes"] == "none"]
    if runs:
        best = max(runs, key=lambda r: r["chunks_per_s"])
        alone = e.rates["wikipedia-vital-en"]
        e.res.update(chunks_per_s=best["chunks_per_s"], encoder_alone_chunks_per_s=alone,
                     e2e_over_encoder_alone=best["chunks_per_s"] / alone, gpu_busy=best["gpu_busy_encode"],
                     headline_run=f"wikipedia copies, {best['workers']} worker(s) per GPU")


def codes(e: E2E) -> None:
    """Binary and int8 codes from vectors on the device against embedlab.ops on the same vectors."""
    from embedlab import gpu_codes, ops
    from variants import AsyncEncoder

    torch = e.torch
    vec = AsyncEncoder(e.encoder()).encode_ids_device(e.ids["scifact"], e.a.batch_size)
    e.sync()
    host = vec.cpu().numpy()
    ranges = ops.calibrate_int8_ranges(host[: max(1, len(host) // 4)])
    binary = gpu_codes.quantize_binary(vec).cpu().numpy()
    int8 = gpu_codes.quantize_int8(vec, ranges).cpu().numpy()
    equal = bool(np.array_equal(binary, ops.quantize_binary(host)) and np.array_equal(int8, ops.quantize_int8(host, ranges)))

    def d2h(make):
        return timed(lambda: make().cpu(), e.sync, min_seconds=0 if e.a.dry_run else 0.5)["seconds"]

    dim = host.shape[1]
    half = vec.to(torch.float16)
    e.res.update(gpu_codes_equal_cpu=equal, codes={
        "chunks": len(host), "binary equal to ops": bool(np.array_equal(binary, ops.quantize_binary(host))),
        "int8 equal to ops": bool(np.array_equal(int8, ops.quantize_int8(host, ranges))),
        "bytes/chunk moved: float32 / float16 / int8 / binary": " / ".join(
            str(gpu_codes.bytes_per_vector(dim, k)) for k in ("float32", "float16", "int8", "binary")),
        "device-to-host ms for all chunks: float32": round(1e3 * d2h(lambda: vec), 3),
        "device-to-host ms: float16": round(1e3 * d2h(lambda: half), 3),
        "device-to-host ms: int8 codes made then copied": round(1e3 * d2h(lambda: gpu_codes.quantize_int8(vec, ranges)), 3),
        "device-to-host ms: binary codes made then copied": round(1e3 * d2h(lambda: gpu_codes.quantize_binary(vec)), 3),
    })
    e.vectors = host


def search(e: E2E) -> None:
    """Exact top-10 on the device against CPU FAISS: SciFact (random-weight vectors) and a large synthetic set."""
    import faiss

    from embedlab.gpu_search import TorchFlatIndex, same_results
    from embedlab.ops import normalize
    from embedlab.store import faiss_ids

    enc = e.encoder()
    qpath = next((p for p in (e.a.carry / "data" / "scifact" / "queries.jsonl",
                              REPO.parent / "shared" / "data" / "scifact" / "queries.jsonl") if p.is_file()))
    queries = [json.loads(ln)["text"] for ln in qpath.open() if ln.strip()][: 40 if e.a.dry_run else None]
    sets = {"scifact (random-weight vectors)": (e.vectors, np.asarray(faiss_ids(e.chunk_ids), dtype=np.int64),
                                                enc.encode_texts(queries))}
    n = 20_000 if e.a.dry_run else 1_000_000
    rng = np.random.default_rng(0)
    synth = normalize(rng.standard_normal((n, e.vectors.shape[1]), dtype=np.float32))
    sets[f"synthetic {n:,} x {e.vectors.shape[1]}"] = (synth, np.arange(n, dtype=np.int64),
                                                     normalize(rng.standard_normal((1024, e.vectors.shape[1]),
                                                                                   dtype=np.float32)))
    out = {"k": 10, "faiss_threads": faiss.omp_get_max_threads()}
    for name, (corpus, ids, q) in sets.items():
        flat = faiss.IndexIDMap2(faiss.IndexFlatIP(corpus.shape[1]))
        flat.add_with_ids(corpus, ids)
        index = TorchFlatIndex(corpus, ids, device=e.device)
        D0, I0 = flat.search(q, 10)
        D1, I1 = index.search(q, 10)
        cmp = same_results(D1, I1, D0, I0)
        t_cpu = timed(lambda: flat.search(q, 10), lambda: None, min_seconds=0 if e.a.dry_run else 1.0)["seconds"]
        t_dev = timed(lambda: index.search(q, 10), e.sync, min_seconds=0 if e.a.dry_run else 1.0)["seconds"]
        out[name] = (f"{len(q)} queries: CPU FAISS {len(q) / t_cpu:,.0f} q/s, torch on {e.device} "
                     f"{len(q) / t_dev:,.0f} q/s ({t_cpu / t_dev:.1f}x); ids equal {cmp['ids_equal']}, "
                     f"equal up to ties {cmp['ids_equal_up_to_ties']}, max score diff {cmp['max_score_diff']:.2e}")
        out[f"{name}: equal"] = cmp["equal"]
    e.res.update(search=out, gpu_search_equal_cpu=all(v for k, v in out.items() if k.endswith(": equal")))


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    e = E2E(a)
    e.res.update(device=e.info["device"], machine=e.info, status="running", dry_run=a.dry_run,
                 command="python benchmarks/gpu/bench_gpu_e2e.py " + " ".join(sys.argv[1:] if argv is None else argv),
                 note="split-parallel input path: each worker reads, tokenizes and chunks its own splits")
    e.section("corpora", find_corpora, e)
    e.section("encoder alone", encoder_alone, e)
    if "codes" not in a.skip:
        e.section("codes on the device", codes, e)
    if "search" not in a.skip and "codes" not in a.skip:  # search reuses the vectors the codes made
        e.section("search on the device", search, e)
    if e.rates:
        embed_runs(e)
    e.res.update(status="done", wall_seconds=round(e.budget.elapsed(), 1))
    shutil.rmtree(e.tmp, ignore_errors=True)  # random-weight models and stores
    print(e.res.render(e.res.doc), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
