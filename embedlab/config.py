"""Frozen, keyword-only configuration for every stage of an embed run.

Each dataclass validates itself in ``__post_init__`` and turns strings into enums, so a
config built from the CLI, a notebook or a test is checked the same way.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SAMPLE_CORPUS = Path(__file__).parent / "data" / "sample_corpus.jsonl"  # shipped with embedlab
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: Any) -> bool:
    """True for a corpus that fsspec reads (``s3://``, ``gs://``, ``az://``, ``https://``, ...)."""
    return isinstance(path, str) and bool(_URL.match(path))


def corpus_location(path: str | os.PathLike) -> Path | str:
    """A corpus path as the readers take it: a URL stays a string (``Path`` would fold its ``//``),
    a ``file://`` URL becomes the local path it names, anything else a ``Path``."""
    if is_url(path):
        if path.lower().startswith("file://"):
            from urllib.parse import unquote, urlsplit

            return Path(unquote(urlsplit(path).path))
        return path
    return Path(path)


def default_corpus() -> Path:
    """SciFact from the shared data folder when it is there, else the corpus shipped with embedlab."""
    repo = Path(__file__).resolve().parents[1]
    for root in (Path.cwd().parent / "shared" / "data", repo.parent / "shared" / "data"):
        path = root / "scifact" / "corpus.jsonl.gz"
        if path.is_file():
            return path
    return SAMPLE_CORPUS


def default_overlap(chunk_tokens: int) -> int:
    """Overlap of consecutive chunks when none is given: an eighth of the window (32 of 256 tokens)."""
    return chunk_tokens // 8


class CorpusFormat(str, enum.Enum):
    AUTO = "auto"  # decided from the path: .jsonl[.gz] -> beir or jsonl, .parquet, folder of .txt
    BEIR = "beir"  # JSONL with _id, title, text; encoded text is title + " " + text, stripped
    JSONL = "jsonl"  # JSONL with the id and text fields named by CorpusConfig
    PARQUET = "parquet"
    TXT = "txt"  # a folder of .txt files; the id is the path relative to the folder
    CHUNKS = "chunks"  # a folder written by `embedlab chunk` (pre-tokenized); recognized by its metadata
    PRECHUNKED = "prechunked"  # Parquet rows that are chunks made upstream (id and text fields name them)


class LongChunks(str, enum.Enum):
    SPLIT = "split"  # a prechunked row longer than the window becomes windows ID#0, ID#1, ...
    REFUSE = "refuse"  # it is rejected (listed in _rejects.jsonl with its length)


class Dtype(str, enum.Enum):
    AUTO = "auto"  # bf16 on CPUs with native bf16 (AVX512-BF16, AMX), fp32 on other CPUs, fp16 on CUDA
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"  # CPU: int8 Linear layers, 8-bit dynamic activations on VNNI/AMX CPUs (embedlab/quantize.py)


def parse_enum(kind: type[enum.Enum], value: Any, what: str) -> Any:
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)  # type: ignore[attr-defined]
        raise ValueError(f"{what} must be one of {allowed}; got {value!r}") from None


@dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    path: Path | str  # a local path, or a URL fsspec reads (kept as a string; see corpus_location)
    format: CorpusFormat = CorpusFormat.AUTO
    id_field: str = "_id"  # generic JSONL / Parquet: the column holding the document id
    text_field: str = "text"  # generic JSONL / Parquet: the column holding the text
    title_field: str | None = "title"  # joined before the text when present (BEIR convention)
    doc_field: str | None = None  # prechunked input: the column holding each chunk's document id;
    # None: each chunk is its own document (doc_id = chunk id)
    limit: int | None = None  # stop after this many good documents
    block_docs: int = 1024  # documents read and tokenized per block; bounds a reader's memory
    split_bytes: int = 16 << 20  # corpus bytes per split, the unit a worker reads on its own
    # (a JSONL byte range, Parquet row groups, .txt files; a .gz file is always one split)
    storage_options: Mapping[str, Any] = field(default_factory=dict, metadata={"secret": True})
    # fsspec options for a URL corpus (endpoint_url, key, secret, anon, ...); they travel with each
    # split task, and no store or summary records them

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", corpus_location(self.path))
        object.__setattr__(self, "storage_options", dict(self.storage_options))
        object.__setattr__(self, "format", parse_enum(CorpusFormat, self.format, "corpus format"))
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1; got {self.limit}")
        if self.block_docs < 1:
            raise ValueError(f"block_docs must be >= 1; got {self.block_docs}")
        if self.split_bytes < 1:
            raise ValueError(f"split_bytes must be >= 1; got {self.split_bytes}")


@dataclass(frozen=True, kw_only=True)
class ChunkConfig:
    chunk_tokens: int | None = None  # tokens per chunk incl. special tokens; None: model max length
    overlap: int | None = None  # tokens shared by consecutive chunks of one document;
    # None: default_overlap(chunk_tokens), an eighth of the window (32 for 256 tokens)
    truncate: bool = False  # one chunk per document, cut at chunk_tokens (MTEB / BEIR evaluation)
    long_chunks: LongChunks = LongChunks.SPLIT  # prechunked input: a chunk longer than chunk_tokens

    def __post_init__(self) -> None:
        object.__setattr__(self, "long_chunks", parse_enum(LongChunks, self.long_chunks, "long_chunks"))
        if self.chunk_tokens is not None and self.chunk_tokens < 8:
            raise ValueError(f"chunk_tokens must be >= 8; got {self.chunk_tokens}")
        if self.overlap is not None and self.overlap < 0:
            raise ValueError(f"overlap must be >= 0; got {self.overlap}")
        if self.chunk_tokens is not None and self.overlap is not None and self.overlap >= self.chunk_tokens // 2:
            raise ValueError(
                f"overlap ({self.overlap}) must be less than half of chunk_tokens ({self.chunk_tokens})"
            )

    def overlap_for(self, chunk_tokens: int) -> int:
        """The overlap used with windows of ``chunk_tokens`` tokens."""
        return default_overlap(chunk_tokens) if self.overlap is None else self.overlap


@dataclass(frozen=True, kw_only=True)
class EncodeConfig:
    model: str = DEFAULT_MODEL  # local directory, hub name, or a name an installed package carries
    revision: str | None = None  # hub revision; None: the default branch
    dtype: Dtype = Dtype.AUTO  # resolved once by the driver (embedlab.encoder.resolve_dtype); a
    # store records the concrete one, and auto adopts an existing store's
    device: str = "auto"  # auto: cuda when present, else cpu
    batch_size: int = 128  # most chunks in one forward pass; batches are length-sorted
    max_batch_tokens: int | None = None  # padded-token budget per batch: short chunks come in
    # larger batches (up to batch_size), long ones in smaller; None: the device's default
    # (CPU_BATCH_TOKENS on CPU, no budget on CUDA); 0: no budget, batch_size rows always
    torch_threads: int | None = None  # intra-op threads per worker; None: set by the cluster
    compile: bool | None = None  # torch.compile the model; None: off unless the
    # EMBEDLAB_COMPILE=1 environment variable says on (a ~5% gain on CPU that costs 8-25 s to compile)
    trust_remote_code: bool = False  # never run a model repository's own code unless asked
    packed: bool = True  # CUDA fp16/bf16 BERT: packed tokens, flash varlen attention (embedlab.packed)
    keep_freed_memory: bool = True  # CPU: set this process's glibc malloc to keep freed memory
    # mapped, so forward passes stop page-faulting their activations (embedlab/malloc.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", parse_enum(Dtype, self.dtype, "dtype"))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 0:
            raise ValueError(f"max_batch_tokens must be >= 0 (0: no budget); got {self.max_batch_tokens}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N]; got {self.device!r}")


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    scheduler: str | None = None  # address of a running Dask scheduler; None: start one in-process
    workers: int | None = None  # in-process workers; None: one per GPU, or sized to the CPU
    threads: int | None = None  # torch threads per CPU worker; None: cores // workers
    workers_per_gpu: int | None = None  # local GPU clusters; None: by model width (workers_per_gpu_for)

    def __post_init__(self) -> None:
        for name in ("workers", "workers_per_gpu"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1; got {value}")


# Workers per GPU for a model up to SMALL_MODEL_DIM wide (all-MiniLM-L6-v2's 384): measured on an
# H100 with 16 host cores, the whole embed's encode phase ran 1.0x / 1.7x / 2.3x with 1 / 2 / 4
# workers (benchmarks/results/embed_gpu_workers.md): each worker's reading and tokenizing leaves the
# GPU idle. A wider model keeps the GPU busy with one (bge-base: 29.5% MFU alone).
SMALL_MODEL_DIM = 384
SMALL_MODEL_WORKERS_PER_GPU = 4


def workers_per_gpu_for(cluster: ClusterConfig, dim: int) -> ClusterConfig:
    """``cluster`` with ``workers_per_gpu`` chosen for a model of width ``dim`` when it is unset."""
    if cluster.workers_per_gpu is not None:
        return cluster
    return replace(cluster, workers_per_gpu=SMALL_MODEL_WORKERS_PER_GPU if dim <= SMALL_MODEL_DIM else 1)


CODE_KINDS = ("binary", "int8")  # codes an embed can write beside the vectors (embedlab.codes)


@dataclass(frozen=True, kw_only=True)
class EmbedConfig:
    corpus: CorpusConfig
    out: Path
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    partition_tokens: int = 65536  # token budget per partition: one task, one Parquet + FAISS pair
    progress: bool = True
    take_over: bool = False  # take over a stale writer claim from another host (see Store.claimed)
    verify_deep: bool = False  # resume re-hashes committed files instead of trusting their sizes
    codes: tuple[str, ...] = ()  # codes written beside the vectors: any of CODE_KINDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.partition_tokens < 1:
            raise ValueError(f"partition_tokens must be >= 1; got {self.partition_tokens}")
        unknown = sorted(set(self.codes) - set(CODE_KINDS))
        if unknown:
            raise ValueError(f"codes must be among {', '.join(CODE_KINDS)}; got {', '.join(unknown)}")
        if self.codes and self.corpus.limit is not None:
            raise ValueError("codes are written by the split-parallel path, which reads whole splits: "
                             "drop limit (--limit), or embed a smaller corpus file")


def to_jsonable(obj: Any) -> Any:
    """A config as plain JSON values (enums by value, paths as strings), without its secret fields
    (storage options may hold credentials: a store never records them)."""
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in fields(obj) if not f.metadata.get("secret")}
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj
