"""The native BERT (no transformers import): transformers' outputs, its tokenizer's ids, and a
worker that loads all-MiniLM-L6-v2 without importing transformers at all."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from embedlab import bert, onednn
from embedlab.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def model_path(encoder):
    return encoder.info.path


def test_native_bert_equals_transformers_bert(model_path, encoder, scifact_docs):
    from transformers import AutoModel

    assert encoder.native and isinstance(encoder.model, bert.NativeBert)
    theirs = AutoModel.from_pretrained(model_path).eval()
    ours = bert.load(model_path)
    texts = [d["text"][: 30 + 45 * i] for i, d in enumerate(scifact_docs[:8])]  # unequal: padded rows
    ids = encoder.tokenize(texts)
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([list(x) + [0] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    with torch.inference_mode():
        for m in (mask, torch.ones_like(mask)):  # padded rows, and the unmasked fast path
            a = ours(input_ids=input_ids, attention_mask=m).last_hidden_state
            b = theirs(input_ids=input_ids, attention_mask=m).last_hidden_state
            keep = m.bool()
            assert torch.allclose(a[keep], b[keep], atol=2e-5), (a[keep] - b[keep]).abs().max()


def test_rust_tokenizer_gives_transformers_ids(model_path, scifact_docs):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(model_path)
    native = load_checkpoint(model_path, 256)
    texts = ["", "a", "Ünïcödé  spaces\tand\nlines", *[(d["title"] + " " + d["text"]) for d in scifact_docs[:40]]]
    want = hf(texts, truncation=True, max_length=256, add_special_tokens=True)["input_ids"]
    got = native.tokenize(texts)
    assert [g.tolist() for g in got] == want
    assert max(len(g) for g in got) == 256  # long abstracts are truncated, as transformers does
    assert native.pad_id == hf.pad_token_id and native.native


def test_other_architectures_go_through_transformers(tmp_path, model_path):
    for change in ({"model_type": "roberta"}, {"position_embedding_type": "relative_key"}, {"hidden_act": "swish"}):
        (tmp_path / "model.safetensors").write_bytes(b"")
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", **change}))
        assert not bert.supports(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert bert.supports(tmp_path) and bert.supports(model_path)
    (tmp_path / "model.safetensors").unlink()
    assert not bert.supports(tmp_path)  # pytorch_model.bin only: transformers loads it


def test_a_worker_encodes_without_importing_transformers(model_path):
    code = f"""
import sys
from embedlab.config import EncodeConfig
from embedlab.encoder import Encoder
enc = Encoder(EncodeConfig(model={model_path!r}, device="cpu", dtype="fp32"))
v = enc.encode_texts(["a cat sat on the mat", "dogs"])
print(enc.native, v.shape, sorted(m for m in sys.modules if m.split(".")[0] in ("transformers", "sentence_transformers")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True (2, 384) []"


def test_native_vectors_match_sentence_transformers(encoder, st_model, scifact_docs):
    texts = [(d["title"] + " " + d["text"]).strip() for d in scifact_docs[:32]]
    a, b = encoder.encode_texts(texts, batch_size=7), st_model.encode(texts, batch_size=16)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.99999


@pytest.mark.skipif(not onednn.available(), reason="torch built without oneDNN")
def test_onednn_packed_bf16_equals_the_unpacked_bf16_model(model_path, scifact_docs):
    from embedlab.config import EncodeConfig
    from embedlab.encoder import Encoder

    enc = Encoder(EncodeConfig(model=model_path, dtype="bf16", device="cpu"))
    assert isinstance(enc.model.encoder.layer[0].attention.self.qkv, onednn.PackedLinear)  # the default
    plain = bert.load(model_path).to(torch.bfloat16)
    texts = [d["text"][: 30 + 45 * i] for i, d in enumerate(scifact_docs[:8])]  # padded rows too
    packed_vectors = enc.encode_texts(texts)
    enc.model = plain
    plain_vectors = enc.encode_texts(texts)
    assert (packed_vectors * plain_vectors).sum(1).min() >= 0.9999
