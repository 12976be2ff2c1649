from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedlab.chunking import Chunker
from embedlab.corpus import Document
from embedlab.batching import plan_batches
from embedlab.encoder import ModelNotFoundError, describe_model, resolve_model_path


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_reads_the_sentence_transformers_config(encoder):
    info = encoder.info
    assert (info.pooling, info.normalize, info.max_seq_length, info.dim) == ("mean", True, 256, 384)
    assert len(info.sha256) == 64
    assert not encoder.model.training


def test_parity_with_sentence_transformers_on_scifact_chunks(encoder, st_model, scifact_docs):
    docs = [Document(d["_id"], (d["title"] + " " + d["text"]).strip(), "s", i)
            for i, d in enumerate(scifact_docs[:60])]
    chunks, _ = Chunker(encoder.tokenizer, 256, 32).chunk(docs)
    ours = encoder.encode_ids([c.input_ids for c in chunks])
    theirs = st_model.encode([c.text for c in chunks], batch_size=32, convert_to_numpy=True)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    assert cosine(ours, theirs).min() >= 0.9999


def test_rows_come_back_in_input_order_whatever_the_batch(encoder, scifact_docs):
    texts = [d["text"][: 50 + 37 * i] for i, d in enumerate(scifact_docs[:12])]
    a = encoder.encode_texts(texts, batch_size=5)
    b = np.stack([encoder.encode_texts([t])[0] for t in texts])
    assert cosine(a, b).min() >= 0.9999


def test_unknown_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="could not be fetched"):
        resolve_model_path("no-such-org/no-such-model")


def test_local_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        describe_model(str(tmp_path))


def test_hub_name_loads_offline_from_the_local_hub_cache(tmp_path, encoder):
    """The real hub code path (snapshot_download) with HF_HUB_OFFLINE=1 and a filled cache."""
    repo = tmp_path / "hub" / "models--embedlab-test--minilm"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    shutil.copytree(encoder.info.path, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "import json; from embedlab.config import EncodeConfig; from embedlab.encoder import Encoder\n"
        "e = Encoder(EncodeConfig(model='embedlab-test/minilm', device='cpu', dtype='fp32'))\n"
        "v = e.encode_texts(['offline hub cache'])[0]\n"
        "print(json.dumps({'rev': e.info.revision, 'path': e.info.path, 'v': v[:8].tolist()}))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["rev"] == commit and Path(got["path"]) == snap
    want = encoder.encode_texts(["offline hub cache"])[0][:8]
    assert np.allclose(got["v"], want, atol=1e-5)


@pytest.mark.parametrize("dtype", ["bf16"])
def test_reduced_precision_on_cpu_stays_close(dtype, scifact_docs):
    from embedlab.config import EncodeConfig
    from embedlab.encoder import Encoder

    e32 = Encoder(EncodeConfig(device="cpu", dtype="fp32"))
    elo = Encoder(EncodeConfig(device="cpu", dtype=dtype))
    texts = [d["text"] for d in scifact_docs[:8]]
    assert cosine(e32.encode_texts(texts), elo.encode_texts(texts)).min() > 0.98


def test_plan_batches_respects_rows_and_token_budget():
    from embedlab.batching import plan_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 257, size=1000)
    batches = plan_batches(lengths, max_rows=128, max_tokens=4096)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    for b in batches:
        assert len(b) <= 128 and (len(b) == 1 or len(b) * lengths[b].max() <= 4096)
        assert lengths[b[0]] == lengths[b].max()
    assert np.all(np.diff(lengths[flat]) <= 0)  # longest first overall
    assert len(plan_batches(np.array([300, 10]), max_rows=8, max_tokens=100)[0]) == 1
    assert [len(b) for b in plan_batches(lengths, 64)] == [64] * 15 + [40]


def test_token_budget_gives_the_same_vectors_and_tracks_padding(encoder, scifact_docs):
    texts = [d["text"][: 40 + 23 * i] for i, d in enumerate(scifact_docs[:40])]
    ids = encoder.tokenize(texts)
    before = encoder.stats.padded_tokens
    a = encoder.encode_ids(ids, batch_size=16)
    b = encoder.encode_ids(ids, batch_size=64, max_batch_tokens=2048)
    assert cosine(a, b).min() >= 0.9999
    assert encoder.stats.padded_tokens > before and 0 <= encoder.stats.padding_waste < 0.5


def test_compiled_encoder_matches_sentence_transformers(st_model, scifact_docs):
    from embedlab.config import EncodeConfig
    from embedlab.encoder import Encoder, wants_compile

    enc = Encoder(EncodeConfig(device="cpu", dtype="fp32", compile=True))
    assert enc.compiled, enc.compile_error
    texts = [(d["title"] + " " + d["text"]).strip() for d in scifact_docs[:24]]
    theirs = st_model.encode(texts, batch_size=8)
    assert cosine(enc.encode_texts(texts, batch_size=5), theirs).min() >= 0.9999
    assert wants_compile(EncodeConfig(compile=True)) is True


def test_compile_is_opt_in(monkeypatch):
    from embedlab.config import EncodeConfig
    from embedlab.encoder import wants_compile

    monkeypatch.delenv("EMBEDLAB_COMPILE", raising=False)
    assert wants_compile(EncodeConfig()) is False
    monkeypatch.setenv("EMBEDLAB_COMPILE", "1")
    assert wants_compile(EncodeConfig()) is True
    assert wants_compile(EncodeConfig(compile=False)) is False


def test_batch_token_budget_defaults_per_device():
    from embedlab.config import EncodeConfig
    from embedlab.encoder import CPU_BATCH_TOKENS, batch_token_budget

    assert batch_token_budget(EncodeConfig(), "cpu") == CPU_BATCH_TOKENS
    assert batch_token_budget(EncodeConfig(), "cpu", 768) == CPU_BATCH_TOKENS  # wider: unchanged
    assert batch_token_budget(EncodeConfig(), "cpu", 32) == 12 * CPU_BATCH_TOKENS  # narrow: same bytes
    assert batch_token_budget(EncodeConfig(), "cuda") is None
    assert batch_token_budget(EncodeConfig(max_batch_tokens=0), "cpu") is None
    assert batch_token_budget(EncodeConfig(max_batch_tokens=512), "cuda") == 512
    with pytest.raises(ValueError, match="max_batch_tokens must be >= 0"):
        EncodeConfig(max_batch_tokens=-1)


FAULTS_PER_PASS = """
import resource, sys
import numpy as np
from embedlab.config import EncodeConfig
from embedlab.encoder import Encoder

encoder = Encoder(EncodeConfig(device="cpu", dtype="fp32", keep_freed_memory=sys.argv[1] == "keep"))
ids = [np.arange(1000, 1256) for _ in range(8)]  # one batch of 2,048 tokens
encoder.encode_ids(ids)
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    encoder.encode_ids(ids)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(encoder.keeps_freed_memory, sorted(faults)[1])
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or bool(os.environ.get("LD_PRELOAD")),
                    reason="glibc's own malloc only")
def test_cpu_encoder_stops_page_faulting_its_activations():
    """Under glibc's defaults every pass faults its activations in again; kept, they stay mapped."""
    runs = {}
    for mode in ("keep", "default"):
        out = subprocess.run([sys.executable, "-c", FAULTS_PER_PASS, mode], capture_output=True, text=True,
                             check=True).stdout.split()
        runs[mode] = (out[0] == "True", int(out[1]))
    assert runs["keep"][0] and not runs["default"][0]
    # 12 MiB of FFN activations alone are 3,072 pages; measured here (fp32): ~0-1,500 kept, 11,000-35,000 not
    assert runs["keep"][1] < 5000 < runs["default"][1], runs


def test_default_cpu_batches_hold_the_token_budget(encoder, scifact_docs):
    """Long chunks come a few to a batch and short ones many, on the CPU encoder's defaults."""
    from embedlab.encoder import CPU_BATCH_TOKENS

    assert encoder.device == "cpu" and encoder.max_batch_tokens == CPU_BATCH_TOKENS
    texts = [(d["title"] + " " + d["text"]).strip() for d in scifact_docs[:64]] + ["a short one"] * 64
    ids = encoder.tokenize(texts)
    before = dataclasses.replace(encoder.stats)
    vectors = encoder.encode_ids(ids)
    batches = encoder.stats.batches - before.batches
    padded = encoder.stats.padded_tokens - before.padded_tokens
    lengths = np.array([len(x) for x in ids])
    planned = plan_batches(lengths, encoder.cfg.batch_size, CPU_BATCH_TOKENS)
    assert vectors.shape == (128, encoder.dim) and batches == len(planned)
    assert padded <= batches * CPU_BATCH_TOKENS  # no batch over budget (every chunk fits one)
    assert len(planned[0]) <= CPU_BATCH_TOKENS // lengths.max()  # the longest come a few at a time
    assert max(len(b) for b in planned) >= 32  # the short ones many to a batch
    unbudgeted = encoder.encode_ids(ids, max_batch_tokens=0)
    assert cosine(vectors, unbudgeted).min() >= 0.9999


def test_int8_is_close_but_lossy_and_cpu_only(encoder, scifact_docs):
    from embedlab.config import EncodeConfig
    from embedlab.encoder import Encoder

    int8 = Encoder(EncodeConfig(device="cpu", dtype="int8"))
    texts = [(d["title"] + " " + d["text"]).strip() for d in scifact_docs[:16]]
    c = cosine(int8.encode_texts(texts), encoder.encode_texts(texts))
    assert c.min() > 0.93 and c.mean() > 0.96 and c.min() < 0.9999  # measurably lossy
    with pytest.raises(ValueError, match="CPU only"):
        Encoder(EncodeConfig(device="cuda", dtype="int8"))


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_packed_bert_equals_the_padded_model(encoder, scifact_docs, pooling):
    """The CUDA default for BERT at fp16/bf16 packs a batch's tokens (no padding) and runs attention
    per sequence (flash varlen there; per-sequence SDPA here): the same vectors as the padded model,
    whatever the pooling, on a batch of very unequal lengths."""
    import torch

    from embedlab.encoder import _pool
    from embedlab.packed import PackedBert, packable, varlen_attention_available

    assert packable(encoder.model) and not varlen_attention_available("cpu", torch.float16)
    assert encoder.packed is None  # on the CPU the padded path stays the default
    texts = [d["text"][: 40 + 60 * i] for i, d in enumerate(scifact_docs[:9])]
    batch = encoder.tokenize(texts)
    packed = PackedBert(encoder.model, "cpu", pooling, True, flash=False)
    with torch.inference_mode():
        got = packed.pooled(batch).numpy()
        width = max(len(x) for x in batch)
        ids = torch.tensor([list(x) + [encoder.pad_id] * (width - len(x)) for x in batch])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch])
        hidden = encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
        want = torch.nn.functional.normalize(_pool(hidden.float(), mask, pooling), p=2, dim=1).numpy()
    assert len({len(x) for x in batch}) == 9
    assert np.abs(got - want).max() < 2e-5
