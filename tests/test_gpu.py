"""CUDA: the encoder and the embed job on a GPU give the CPU's vectors. Marked ``gpu``: excluded
by default (``pytest -m gpu`` runs them) and skipped where torch sees no CUDA device."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import embedlab
from embedlab.config import EncodeConfig
from embedlab.encoder import Encoder

from .conftest import write_jsonl

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("dtype,floor", [("fp32", 0.9999), ("fp16", 0.999), ("bf16", 0.99)])
def test_cuda_encoder_gives_the_cpu_vectors(encoder, scifact_docs, dtype, floor):
    texts = [(d["title"] + " " + d["text"]).strip() for d in scifact_docs[:64]]
    gpu = Encoder(EncodeConfig(device="cuda", dtype=dtype))
    assert gpu.device.startswith("cuda")
    v = gpu.encode_texts(texts)
    assert v.dtype == np.float32 and np.isfinite(v).all()
    assert cosine(v, encoder.encode_texts(texts)).min() >= floor


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_cuda_default_packs_tokens_and_keeps_the_padded_vectors(encoder, scifact_docs, dtype):
    texts = [(d["title"] + " " + d["text"]).strip()[: 80 + 50 * i] for i, d in enumerate(scifact_docs[:64])]
    packed = Encoder(EncodeConfig(device="cuda", dtype=dtype))
    padded = Encoder(EncodeConfig(device="cuda", dtype=dtype, packed=False))
    assert packed.packed is not None and padded.packed is None
    v = packed.encode_texts(texts)
    assert cosine(v, padded.encode_texts(texts)).min() >= 0.999
    assert cosine(v, encoder.encode_texts(texts)).min() >= 0.99


def test_embed_job_on_the_gpu_equals_the_cpu_run(tmp_path, encoder, scifact_docs):
    corpus = write_jsonl(tmp_path / "c.jsonl", scifact_docs[:40])
    r = embedlab.embed(corpus, tmp_path / "gpu", progress=False)
    assert r.ok and str(r.encoder["device"]).startswith("cuda")
    t = pq.read_table(r.out, columns=["text", "vector"])
    v = np.stack(t.column("vector").to_numpy(zero_copy_only=False))
    assert cosine(v, encoder.encode_texts(t.column("text").to_pylist())).min() >= 0.9999
