"""dtype=auto: the choice per CPU, the store keeping its dtype, and the report of a non-native format."""

from __future__ import annotations

import json

import numpy as np
import pytest

import embedlab
from embedlab.config import Dtype, EncodeConfig
from embedlab.encoder import choose_dtype, dtype_note, resolve_dtype
from embedlab.hardware import cpu_flags
from embedlab.quantize import full_range_activations
from tests.conftest import write_jsonl

# /proc/cpuinfo flags of real CPUs (abridged to the vector extensions).
EPYC_GENOA = "fpu sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx512_bitalg"
SAPPHIRE_RAPIDS = "fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8"
SKYLAKE_SP = "fpu sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl"
ZEN2 = "fpu sse4_2 avx avx2 fma sha_ni"
GRAVITON2 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from embedlab.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.mark.parametrize(("flags", "want"), [
    (EPYC_GENOA, Dtype.BF16), (SAPPHIRE_RAPIDS, Dtype.BF16),
    (SKYLAKE_SP, Dtype.FP32), (ZEN2, Dtype.FP32), (GRAVITON2, Dtype.FP32), ("", Dtype.FP32),
])
def test_auto_picks_bf16_only_on_cpus_with_native_bf16(flags, want):
    assert choose_dtype("cpu", flags.split()) is want
    assert choose_dtype("cuda", flags.split()) is Dtype.FP16
    assert choose_dtype("cuda:1", flags.split()) is Dtype.FP16


def test_a_format_the_cpu_lacks_is_named_and_a_native_one_is_not():
    assert dtype_note(Dtype.BF16, "cpu", EPYC_GENOA.split()) is None
    assert "avx512_bf16" in dtype_note(Dtype.BF16, "cpu", SKYLAKE_SP.split())
    assert "not native" in dtype_note(Dtype.INT8, "cpu", ZEN2.split())
    assert dtype_note(Dtype.INT8, "cpu", EPYC_GENOA.split()) is None
    assert dtype_note(Dtype.FP32, "cpu", ZEN2.split()) is None
    assert dtype_note(Dtype.BF16, "cuda", ZEN2.split()) is None


def test_the_summary_names_each_workers_missing_format():
    from embedlab.pipeline import EmbedResult

    note = "worker w1: " + dtype_note(Dtype.BF16, "cpu", ZEN2.split())
    text = EmbedResult(out=".", encoder={"dtype": "bf16", "dtype_notes": [note]}).summary()
    assert f"precision   {note}" in text.splitlines()


def test_resolve_keeps_explicit_dtypes_and_adopts_a_stored_one():
    explicit = EncodeConfig(dtype="fp32", device="cpu")
    assert resolve_dtype(explicit) is explicit and resolve_dtype(explicit, "bf16") is explicit
    assert resolve_dtype(EncodeConfig(device="cpu"), "fp32").dtype is Dtype.FP32
    assert resolve_dtype(EncodeConfig(device="cpu"), "int8").dtype is Dtype.INT8
    assert resolve_dtype(EncodeConfig(device="cpu")).dtype is choose_dtype("cpu", cpu_flags())
    assert resolve_dtype(EncodeConfig(device="cuda")).dtype is Dtype.FP16
    assert EncodeConfig().dtype is Dtype.AUTO


def test_store_records_the_concrete_dtype_and_a_rerun_keeps_an_fp32_store(tmp_path, scifact_docs, tiny_model):
    corpus = write_jsonl(tmp_path / "c.jsonl", scifact_docs[:6])
    fp32 = embedlab.embed(corpus, tmp_path / "fp32", model=str(tiny_model), dtype="fp32", progress=False)
    again = embedlab.embed(corpus, fp32.out, model=str(tiny_model), progress=False)  # dtype auto
    assert again.partitions_skipped == again.partitions  # nothing to redo: no cluster, no model
    assert json.loads((fp32.out / "_embedlab.json").read_text())["dtype"] == "fp32"  # auto kept the store's
    auto = embedlab.embed(corpus, tmp_path / "auto", model=str(tiny_model), progress=False)
    meta = json.loads((auto.out / "_embedlab.json").read_text())
    want = choose_dtype("cpu", cpu_flags()).value
    assert meta["dtype"] == meta["config"]["encode"]["dtype"] == auto.encoder["dtype"] == want
    assert auto.encoder["dtype_notes"] == [] and "precision" not in auto.summary()
    with pytest.raises(embedlab.store.StoreMismatchError, match="dtype"):
        embedlab.embed(corpus, fp32.out, model=str(tiny_model), dtype="int8", progress=False)


def _emulated_int8_linear(x, w, b, bits):
    """What an int8 Linear must compute: x quantized to ``bits`` over its own range, w per row to int8."""
    levels = 2 ** bits - 1
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / levels
    zero = np.clip(np.round(-lo / scale), 0, levels)
    xq = (np.clip(np.round(x / scale) + zero, 0, levels) - zero) * scale
    ws = np.abs(w).max(axis=1, keepdims=True) / 127.0
    wq = np.round(w / ws) * ws
    return xq @ wq.T + b


def test_int8_linear_computes_what_its_quantization_promises_on_this_cpu():
    import torch

    from embedlab.quantize import Int8Linear

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 384)).astype(np.float32) * 3
    x[:, 7] *= 20  # an outlier channel, as transformer activations have
    lin = torch.nn.Linear(384, 1536)
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    want_8, want_7 = _emulated_int8_linear(x, w, b, 8), _emulated_int8_linear(x, w, b, 7)
    exact = x @ w.T + b
    full = full_range_activations(cpu_flags())
    got = Int8Linear(lin, full)(torch.from_numpy(x)).numpy()
    want = want_8 if full else want_7
    assert np.abs(got - want).max() < 0.02 * np.abs(want - exact).max()  # no saturation, no surprise
    if full:  # 8 bits are worth it: about half the 7-bit error
        assert np.abs(want_8 - exact).mean() < 0.6 * np.abs(want_7 - exact).mean()


def test_int8_gives_the_first_token_a_range_of_its_own():
    """BERT's [CLS] row is an outlier (5-10x the others' largest activation at the FFN inputs): shared,
    its range would leave the other tokens a few levels. Each part computes what its own range promises,
    and the input is left as it was."""
    import torch

    from embedlab.quantize import Int8Linear

    full = full_range_activations(cpu_flags())
    bits = 8 if full else 7
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 40, 384)).astype(np.float32)
    x[:, 0] *= 25  # the outlier first token
    lin = torch.nn.Linear(384, 96)
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    xt = torch.from_numpy(x.copy())
    with torch.inference_mode():
        got = Int8Linear(lin, full)(xt).numpy()
    assert np.array_equal(xt.numpy(), x)  # the input is put back
    rest = _emulated_int8_linear(x[:, 1:].reshape(-1, 384), w, b, bits).reshape(3, 39, 96)
    first = _emulated_int8_linear(x[:, 0], w, b, bits)
    shared = _emulated_int8_linear(x.reshape(-1, 384), w, b, bits).reshape(3, 40, 96)[:, 1:]
    exact = x @ w.T + b
    assert np.abs(got[:, 1:] - rest).max() < 0.02 * np.abs(rest - exact[:, 1:]).max()
    assert np.abs(got[:, 0] - first).max() < 0.02 * np.abs(first - exact[:, 0]).max()
    assert np.abs(rest - exact[:, 1:]).mean() < 0.2 * np.abs(shared - exact[:, 1:]).mean()  # what it buys
    grad_x = torch.from_numpy(x.copy()).requires_grad_()
    assert np.allclose(Int8Linear(lin, full)(grad_x).detach().numpy(), got, atol=1e-5)


def test_int8_stays_within_the_promised_cosine_of_fp32(encoder, scifact_docs):
    from embedlab.encoder import Encoder

    int8 = Encoder(EncodeConfig(device="cpu", dtype="int8"))
    texts = [(d["title"] + " " + d["text"]).strip() for d in scifact_docs[:32]]
    c = (int8.encode_texts(texts) * encoder.encode_texts(texts)).sum(1)
    assert c.min() >= (0.995 if full_range_activations(cpu_flags()) else 0.93)
