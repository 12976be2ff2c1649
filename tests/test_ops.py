"""The numpy vector transforms, against brute force and sentence-transformers' quantization."""

from __future__ import annotations

import numpy as np
import pytest

from embedlab import ops


@pytest.fixture
def x() -> np.ndarray:
    """(500, 64) unit vectors with uneven per-dimension scales, like real embeddings."""
    rng = np.random.default_rng(0)
    return ops.normalize(rng.standard_normal((500, 64)) * rng.uniform(0.2, 3.0, 64))


def st_quantize():
    """sentence-transformers' ``quantize_embeddings``, the oracle (a test dependency).

    It has lived in ``sentence_transformers.quantization`` and ``sentence_transformers.util.quantization``;
    if it moves again the tests fail and say so, rather than skip and pass with no oracle.
    """
    import importlib

    import sentence_transformers

    for name in ("sentence_transformers.util.quantization", "sentence_transformers.quantization"):
        try:
            return importlib.import_module(name).quantize_embeddings
        except (ModuleNotFoundError, AttributeError):
            continue
    pytest.fail(f"quantize_embeddings is not where sentence-transformers {sentence_transformers.__version__} "
                "used to keep it: update st_quantize() to its new import path")


def test_normalize_and_truncate(x):
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-6)
    z = ops.normalize(np.zeros((2, 3)))
    assert z.dtype == np.float32 and not z.any()
    t = ops.truncate(x, 16)
    assert t.shape == (500, 16) and t.flags.c_contiguous
    assert np.allclose(t, x[:, :16] / np.linalg.norm(x[:, :16], axis=1, keepdims=True), atol=1e-6)
    assert np.array_equal(ops.truncate(x, 16, renormalize=False), x[:, :16])
    assert np.allclose(ops.truncate(x, 64), x, atol=1e-6)
    with pytest.raises(ValueError, match="between 1 and 64"):
        ops.truncate(x, 65)


def test_float16(x):
    h = ops.to_float16(x)
    assert h.dtype == np.float16 and np.abs(h.astype(np.float32) - x).max() < 1e-3


def test_int8_ranges(x):
    lo, hi = ops.calibrate_int8_ranges(x)
    assert np.array_equal(lo, x.min(0)) and np.array_equal(hi, x.max(0))
    p = ops.calibrate_int8_ranges(x, percentile=99)
    assert p.shape == (2, 64) and (p[0] >= lo).all() and (p[1] <= hi).all() and (p[1] < hi).any()
    with pytest.raises(ValueError, match="percentile"):
        ops.calibrate_int8_ranges(x, percentile=40)
    with pytest.raises(ValueError, match="calibration sample"):
        ops.calibrate_int8_ranges(x[:0])


@pytest.mark.parametrize("percentile", [100.0, 99.0])
def test_int8_matches_sentence_transformers(x, percentile):
    quantize_embeddings = st_quantize()
    ranges = ops.calibrate_int8_ranges(x[:300], percentile=percentile)
    codes = ops.quantize_int8(x, ranges)
    assert codes.dtype == np.int8 and codes.shape == x.shape
    assert np.array_equal(codes, quantize_embeddings(x, "int8", ranges=ranges))
    if percentile == 100:
        ref = quantize_embeddings(x, "int8", calibration_embeddings=x[:300])
        assert np.array_equal(codes, ref)


def test_dequantize_int8_is_within_half_a_step(x):
    ranges = ops.calibrate_int8_ranges(x)
    back = ops.dequantize_int8(ops.quantize_int8(x, ranges), ranges)
    step = (ranges[1] - ranges[0]) / 255
    assert (np.abs(back - x) <= step / 2 + 1e-6).all()


def test_int8_clips_outside_the_ranges(x):
    ranges = ops.calibrate_int8_ranges(x, percentile=90)
    codes = ops.quantize_int8(x, ranges)
    assert codes.min() == -128 and codes.max() == 127
    assert (codes[x < ranges[0]] == -128).all() and (codes[x > ranges[1]] == 127).all()


def test_binary_matches_sentence_transformers(x):
    quantize_embeddings = st_quantize()
    codes = ops.quantize_binary(x)
    assert codes.dtype == np.uint8 and codes.shape == (500, 8)
    assert np.array_equal(codes, quantize_embeddings(x, "ubinary"))
    assert np.array_equal((codes.astype(np.int16) - 128).astype(np.int8), quantize_embeddings(x, "binary"))


def test_unpack_binary_round_trip(x):
    codes = ops.quantize_binary(x[:, :60])
    signs = ops.unpack_binary(codes, 60)
    assert signs.shape == (500, 60) and set(np.unique(signs)) == {-1.0, 1.0}
    assert np.array_equal(signs > 0, x[:, :60] > 0)
    assert np.array_equal(ops.quantize_binary(signs), codes)


def test_hamming_against_brute_force_and_faiss(x):
    faiss = pytest.importorskip("faiss")
    a, b = ops.quantize_binary(x[:20]), ops.quantize_binary(x[20:])
    H = ops.hamming(a, b)
    brute = np.array([[int((np.unpackbits(p) != np.unpackbits(q)).sum()) for q in b] for p in a])
    assert H.dtype == np.int32 and np.array_equal(H, brute)
    sa, sb = ops.unpack_binary(a, 64), ops.unpack_binary(b, 64)
    assert np.array_equal(sa @ sb.T, 64 - 2 * H)  # the ±1 inner product is an affine Hamming
    index = faiss.IndexBinaryFlat(64)
    index.add(b)
    D, I = index.search(a, 5)
    assert np.array_equal(D, np.take_along_axis(H, I, 1))
    assert np.array_equal(D, np.sort(H, axis=1)[:, :5])
