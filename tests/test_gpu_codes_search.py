"""GPU-side codes and exact search: equal to embedlab.ops and FAISS on the same vectors.

They run on the CPU here (the same torch code as on a GPU); with CUDA present the ``gpu``
marked tests run the CUDA device too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedlab import gpu_codes, ops
from embedlab.gpu_search import TorchFlatIndex, same_results

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    x[0, :5] = 0.0  # exact zeros: not > 0, and on int8 range edges
    return ops.normalize(x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dim", [384, 45])
def test_binary_codes_equal_ops(device, dim):
    x = _vectors(500, dim)
    got = gpu_codes.quantize_binary(torch.from_numpy(x).to(device)).cpu().numpy()
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, ops.quantize_binary(x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("percentile", [100.0, 99.9])
def test_int8_codes_equal_ops(device, percentile):
    x = _vectors(2000, 384, seed=1)
    ranges = ops.calibrate_int8_ranges(x[:1000], percentile=percentile)
    ranges[:, 7] = 0.25  # a zero-width range, which ops maps to step 1
    got = gpu_codes.quantize_int8(torch.from_numpy(x).to(device), ranges).cpu().numpy()
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, ops.quantize_int8(x, ranges))


def test_int8_codes_from_half_vectors_equal_ops_on_the_widened_values():
    x = torch.from_numpy(_vectors(300, 64, seed=2)).to(torch.float16)
    ranges = ops.calibrate_int8_ranges(x.float().numpy())
    np.testing.assert_array_equal(gpu_codes.quantize_int8(x, ranges).numpy(),
                                  ops.quantize_int8(x.float().numpy(), ranges))


def test_codes_to_host_and_sizes():
    x = _vectors(10, 384)
    out = gpu_codes.codes_to_host(torch.from_numpy(x), ["binary", "int8"], ops.calibrate_int8_ranges(x))
    assert out["binary"].shape == (10, 48) and out["int8"].shape == (10, 384)
    assert [gpu_codes.bytes_per_vector(384, k) for k in ("float32", "int8", "binary")] == [1536, 384, 48]
    with pytest.raises(ValueError, match="ranges"):
        gpu_codes.codes_to_host(torch.from_numpy(x), ["int8"])
    with pytest.raises(ValueError, match="code kind"):
        gpu_codes.codes_to_host(torch.from_numpy(x), ["pq"])


@pytest.mark.parametrize("device", DEVICES)
def test_exact_search_equals_faiss(device):
    import faiss

    corpus, queries = _vectors(5000, 384, seed=3), _vectors(300, 384, seed=4)
    ids = np.random.default_rng(5).choice(1 << 40, size=len(corpus), replace=False).astype(np.int64)
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(384))
    flat.add_with_ids(corpus, ids)
    D_ref, I_ref = flat.search(queries, 10)
    index = TorchFlatIndex(corpus, ids, device=device, block_rows=1200, query_block=128)  # several blocks
    D, I = index.search(queries, 10)
    cmp = same_results(D, I, D_ref, I_ref)
    assert cmp["equal"] and cmp["max_score_diff"] < 1e-5, cmp
    assert cmp["ids_equal"]


def test_search_with_k_past_the_corpus_pads_like_faiss():
    corpus = _vectors(3, 8)
    D, I = TorchFlatIndex(corpus, device="cpu").search(corpus[:2], 5)
    assert I.shape == (2, 5) and (I[:, 3:] == -1).all() and np.isinf(D[:, 3:]).all()
    assert list(I[:, 0]) == [0, 1]


def test_same_results_tells_ties_from_differences():
    D = np.array([[0.9, 0.5, 0.5]], np.float32)
    assert same_results(D, np.array([[1, 2, 3]]), D, np.array([[1, 3, 2]]))["equal"]
    cut = same_results(D, np.array([[1, 2, 3]]), D, np.array([[1, 2, 4]]))  # 3 and 4 tie at the cut
    assert cut["equal"] and not cut["ids_equal"]
    other = np.array([[0.9, 0.5, 0.3]], np.float32)  # id 4 scores less than the 3 it replaces
    assert not same_results(D, np.array([[1, 2, 3]]), other, np.array([[1, 2, 4]]))["ids_equal_up_to_ties"]
    swapped = np.array([[0.9, 0.7, 0.5]], np.float32)  # 2 and 3 swap without tying
    assert not same_results(swapped, np.array([[1, 2, 3]]), swapped, np.array([[1, 3, 2]]))["equal"]


def test_int8_codes_use_the_hosts_level_widths():
    """The level widths come from ops.int8_steps on both sides (CUDA divides by a Python scalar
    as a product with its reciprocal, which moved codes across levels on the H100)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 16)).astype(np.float32)
    ranges = ops.calibrate_int8_ranges(x[:500])
    lo, width = ops.int8_steps(ranges)
    edges = lo + width * np.arange(1, 255, dtype=np.float32)[:, None]  # values on level boundaries
    x = np.vstack([x, edges.astype(np.float32)])
    assert np.array_equal(gpu_codes.quantize_int8(torch.from_numpy(x), ranges).numpy(),
                          ops.quantize_int8(x, ranges))


def test_bad_search_input_is_refused():
    index = TorchFlatIndex(_vectors(4, 8), device="cpu")
    with pytest.raises(ValueError, match="queries must be"):
        index.search(np.zeros((2, 7), np.float32), 1)
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.zeros((2, 8), np.float32), 0)
    with pytest.raises(ValueError, match="ids must be"):
        TorchFlatIndex(_vectors(4, 8), np.arange(3), device="cpu")
