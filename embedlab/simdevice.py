"""A simulated accelerator: spends time the way a GPU encoder would, returns deterministic vectors.

It lets the pipeline's efficiency at GPU-class rates be tested and measured on a CPU machine:
whether input arrives in time, whether writes hide behind encoding, how busy the device stays.

**Cost model.** A batch of ``b`` rows takes ``(b + b_half) / r_max`` seconds of device time, so
the device's throughput at batch ``b`` is the saturation curve that ``embedlab sweep`` fits and
``embedlab plan`` uses::

    r(b) = r_max * b / (b + b_half)      rows per second

``b_half / r_max`` is the fixed cost of a batch (launches, synchronisation) and ``1 / r_max``
the cost of a row. With ``ref_tokens`` set, ``b`` counts padded tokens (rows x longest row)
divided by ``ref_tokens``, so short chunks cost less, as on a real device. The device time is
spent in ``time.sleep``, which releases the GIL as a CUDA kernel does, so other host threads
(tokenizing, writing) run meanwhile. A device is one device: batches from several threads run
one after another (a lock). Sleeps overshoot by the OS timer's slack (~0.1 ms); the stats
record the time actually spent.

**Vectors.** Each row's vector is a function of its token ids alone (and the seed and ``dim``): a
64-bit polynomial hash of the ids, mixed by splitmix64, picks four rows of a seeded random
table that are summed with weights 1, 1/2, 1/4, 1/8 and normalized. Equal token ids give equal
vectors in any batch, order or process; different ones differ with probability 1 - 2**-48.
The host work for this (a few numpy passes over the batch) happens inside the batch's device
time, before the sleep for the rest of it.

**Interface.** :class:`SimDevice` has what the pipeline's worker path uses of
:class:`embedlab.encoder.Encoder`: ``encode_ids(ids) -> (n, dim) float32`` in input order with
length-sorted batches from :func:`embedlab.encoder.plan_batches`, ``encode_texts``, ``stats``
(:class:`embedlab.batching.EncodeStats`), ``dim``, ``info``, ``device``, ``compiled``,
``compile_error``, ``torch_threads``, ``max_batch_tokens`` and ``keeps_freed_memory``. A model
name ``sim:r_max=66000,b_half=96,dim=384`` names one (:func:`parse_sim_model`).
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from embedlab.config import DEFAULT_MODEL, Dtype
from embedlab.batching import EncodeStats, plan_batches
from embedlab.encoder import ModelInfo, describe_model, fast_tokenizer

if TYPE_CHECKING:
    from embedlab.codes import CodeSpec

SIM_PREFIX = "sim:"
_TABLE_ROWS = 4096  # rows of the seeded vector table; 12 bits of the hash pick each of four


@dataclass(frozen=True, kw_only=True)
class DeviceModel:
    """How fast the simulated device is, and what it returns.

    Example: all-MiniLM-L6-v2 on one H100 at about 40% of its fp16 peak, 256-token chunks:
    ``DeviceModel(r_max=66_000, b_half=96, ref_tokens=256)``.
    """

    r_max: float  # rows per second approached at large batches
    b_half: float  # batch size at which the device reaches r_max / 2
    dim: int = 384  # vector dimension
    ref_tokens: int | None = None  # None: a batch costs by rows; else by padded tokens / ref_tokens
    seed: int = 0  # the vector table's seed
    max_seq_length: int = 256  # longest input, as a model's max length (chunking uses it)
    tokenizer: str = DEFAULT_MODEL  # the model whose tokenizer chunks the text for this device

    def __post_init__(self) -> None:
        if self.r_max <= 0 or self.b_half < 0:
            raise ValueError(f"r_max must be > 0 and b_half >= 0; got {self.r_max}, {self.b_half}")
        if self.dim < 1 or (self.ref_tokens is not None and self.ref_tokens < 1):
            raise ValueError(f"dim and ref_tokens must be >= 1; got {self.dim}, {self.ref_tokens}")

    def rate(self, b: float) -> float:
        """Rows per second at batch size ``b``: r_max * b / (b + b_half)."""
        return self.r_max * b / (b + self.b_half)

    def batch_seconds(self, rows: int, padded_tokens: int | None = None) -> float:
        """Device time of one batch: (b + b_half) / r_max, ``b`` in rows or reference rows."""
        b = rows if self.ref_tokens is None or padded_tokens is None else padded_tokens / self.ref_tokens
        return (b + self.b_half) / self.r_max

    @property
    def spec(self) -> str:
        """The model name that names this device (round-trips through :func:`parse_sim_model`)."""
        parts = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                 if getattr(self, f.name) != f.default or f.name in ("r_max", "b_half")]
        return SIM_PREFIX + ",".join(parts)


def sim_model_info(model: DeviceModel) -> ModelInfo:
    """What a store records: the spec is the name, its digest the weights' checksum; the
    tokenizer's folder is the path chunking reads."""
    tok = describe_model(model.tokenizer)
    return ModelInfo(name=model.spec, path=tok.path, revision=None,
                     sha256=hashlib.sha256(model.spec.encode()).hexdigest(), pooling="sim",
                     normalize=True, max_seq_length=model.max_seq_length, dim=model.dim)


def is_sim_model(name: str) -> bool:
    return name.startswith(SIM_PREFIX)


def parse_sim_model(name: str) -> DeviceModel:
    """``sim:r_max=66000,b_half=96[,dim=384,ref_tokens=256,seed=0,max_seq_length=256,tokenizer=M]``.

    Raises:
        ValueError: not a ``sim:`` name, an unknown key, or a value of the wrong type.
    """
    if not is_sim_model(name):
        raise ValueError(f"not a simulated device: {name!r} (expected {SIM_PREFIX}r_max=...,b_half=...)")
    types = {"r_max": float, "b_half": float, "dim": int, "ref_tokens": int, "seed": int,
             "max_seq_length": int, "tokenizer": str}
    values = {}
    for item in filter(None, name[len(SIM_PREFIX):].split(",")):
        key, _, value = item.partition("=")
        if key not in types:
            raise ValueError(f"{name!r}: unknown key {key!r}; keys are {', '.join(types)}")
        try:
            values[key] = None if value == "None" else types[key](value)
        except ValueError:
            raise ValueError(f"{name!r}: {key} must be a {types[key].__name__}; got {value!r}") from None
    missing = {"r_max", "b_half"} - values.keys()
    if missing:
        raise ValueError(f"{name!r}: missing {', '.join(sorted(missing))}")
    return DeviceModel(**values)


@functools.lru_cache(maxsize=8)
def _table(seed: int, dim: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((_TABLE_ROWS, dim)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _position_weights(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    return rng.integers(1, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E37_79B9_7F4A_7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58_476D_1CE4_E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D0_49BB_1331_11EB)
    return x ^ (x >> np.uint64(31))


def row_hashes(ids: Sequence[np.ndarray], seed: int = 0) -> np.ndarray:
    """``(n,)`` uint64: a hash of each row's token ids and length; equal rows hash equal."""
    n = len(ids)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
    h = np.zeros(n, dtype=np.uint64)
    nonempty = lengths > 0
    if nonempty.any():
        flat = np.concatenate([np.asarray(x) for x in ids]).astype(np.int64).astype(np.uint64)
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        pos = np.arange(flat.size, dtype=np.int64) - np.repeat(starts, lengths)
        weights = _position_weights(seed, _capacity(int(lengths.max())))
        with np.errstate(over="ignore"):
            terms = flat * weights[pos]
            h[nonempty] = np.add.reduceat(terms, starts[nonempty])
    with np.errstate(over="ignore"):
        return _splitmix64(h ^ (lengths.astype(np.uint64) * np.uint64(0x9E37_79B9)))


def _capacity(n: int) -> int:
    return 1 << max(9, (n - 1).bit_length())  # a few cached sizes, not one per length


def sim_vectors(ids: Sequence[np.ndarray], dim: int, seed: int = 0) -> np.ndarray:
    """``(n, dim)`` float32 unit vectors, each a function of its row's token ids alone."""
    table = _table(seed, dim)
    h = row_hashes(ids, seed)
    bits = np.uint64(12)
    mask = np.uint64(_TABLE_ROWS - 1)
    out = table[(h & mask).astype(np.intp)].copy()
    for k, w in ((1, 0.5), (2, 0.25), (3, 0.125)):
        out += np.float32(w) * table[((h >> (bits * np.uint64(k))) & mask).astype(np.intp)]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


class SimDevice:
    """An encoder backend that simulates one accelerator (see the module docstring).

    Args:
        model: the device's speed and output.
        batch_size: most rows per batch.
        max_batch_tokens: padded-token budget per batch; None: no budget (a GPU's default).
    """

    device = "sim"
    dtype = Dtype.FP32  # vectors are float32; the worker path reports it like a real encoder's
    dtype_note: str | None = None
    compiled = False
    compile_error: str | None = None
    torch_threads = 0
    keeps_freed_memory = False

    def __init__(self, model: DeviceModel, *, batch_size: int = 128, max_batch_tokens: int | None = None):
        self.model = model
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.stats = EncodeStats()
        self._lock = threading.Lock()  # one device: batches run one at a time
        self._tokenizer = None

    @property
    def dim(self) -> int:
        return self.model.dim

    @functools.cached_property
    def info(self) -> ModelInfo:
        return sim_model_info(self.model)

    def encode_ids(self, ids: Sequence[np.ndarray], batch_size: int | None = None,
                   max_batch_tokens: int | None = None) -> np.ndarray:
        """``(n, dim)`` float32 vectors for token-id sequences, in input order."""
        n = len(ids)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        budget = self.max_batch_tokens if max_batch_tokens is None else (max_batch_tokens or None)
        for idx in plan_batches(lengths, batch_size or self.batch_size, budget):
            padded = int(lengths[idx[0]]) * len(idx)
            seconds, out[idx] = self.forward([ids[j] for j in idx], padded)
            self.stats.add(seconds, int(lengths[idx].sum()), padded)
        return out

    def encode_ids_coded(self, ids: Sequence[np.ndarray], codes: CodeSpec | None, batch_size: int | None = None,
                         max_batch_tokens: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """:meth:`encode_ids` and the vectors' ``codes``, made on the host (the device's memory is the host's)."""
        vectors = self.encode_ids(ids, batch_size, max_batch_tokens)
        return vectors, codes.on_host(vectors) if codes else {}

    def forward(self, batch: list[np.ndarray], padded_tokens: int) -> tuple[float, np.ndarray]:
        """Run one batch on the device: (device seconds actually spent, its vectors)."""
        with self._lock:
            t0 = time.perf_counter()
            deadline = t0 + self.model.batch_seconds(len(batch), padded_tokens)
            vectors = sim_vectors(batch, self.model.dim, self.model.seed)
            left = deadline - time.perf_counter()
            if left > 0:
                time.sleep(left)  # releases the GIL, as a CUDA kernel does
            return time.perf_counter() - t0, vectors

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids per text with the device's tokenizer, special tokens included, truncated."""
        if self._tokenizer is None:
            tok = fast_tokenizer(describe_model(self.model.tokenizer).path)
            tok.no_padding()
            tok.enable_truncation(self.model.max_seq_length)
            self._tokenizer = tok
        return [np.asarray(e.ids, dtype=np.int32) for e in self._tokenizer.encode_batch(list(texts))]

    def encode_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        return self.encode_ids(self.tokenize(texts), batch_size)


@functools.lru_cache(maxsize=4)
def cached_sim_device(name: str, batch_size: int = 128, max_batch_tokens: int | None = None) -> SimDevice:
    """The process's simulated device for a ``sim:`` model name (one per worker, like the encoder)."""
    return SimDevice(parse_sim_model(name), batch_size=batch_size, max_batch_tokens=max_batch_tokens)
