"""Shared by the GPU benchmark scripts: the carry folder, random-weight models, FLOP counts,
the time budget and results written as they come.

Everything here runs on a CPU too (the ``--dry-run`` of each script), so the GPU minutes go to
measuring rather than debugging.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MODELS = HERE / "models"  # architectures (config + tokenizer files), no weights
CARRY = HERE / "carry"  # ignored: what prepare_carry.py writes and the device call carries
ARCHS = {"minilm": MODELS / "all-MiniLM-L6-v2", "bge-base": MODELS / "bge-base-en-v1.5"}
ARCH_NAMES = {"minilm": "all-MiniLM-L6-v2", "bge-base": "bge-base-en-v1.5"}
# Dense fp16/bf16 tensor-core rates (no sparsity) from NVIDIA's datasheets, FLOP/s.
DATASHEET_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
            "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "vocab.txt")
TINY = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128}


def datasheet_peak(device_name: str) -> float | None:
    """The dense fp16/bf16 peak of a GPU named like ``torch.cuda.get_device_name``; None if unknown."""
    for key, peak in DATASHEET_PEAK.items():
        if key in device_name:
            return peak
    return None


def build_model_dir(arch: Path, out: Path, *, seed: int = 0, tiny: bool = False) -> Path:
    """A complete sentence-transformers model folder with random weights for the architecture ``arch``.

    Args:
        arch: a folder of ``models/`` (config.json, pooling and tokenizer files).
        out: folder to write (weights as model.safetensors, fp32).
        seed: torch seed of the random initialization (BERT's: normal, std 0.02).
        tiny: shrink to 2 layers of width 64 (dry runs): the same code path, seconds not minutes.
    """
    import torch
    from transformers import BertConfig, BertModel

    cfg = json.loads((arch / "config.json").read_text())
    if tiny:
        cfg.update(TINY)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**cfg)).eval()
    model.save_pretrained(out)
    copy_st_files(arch, out)
    if tiny:
        pool = json.loads((out / "1_Pooling" / "config.json").read_text())
        pool["word_embedding_dimension"] = cfg["hidden_size"]
        (out / "1_Pooling" / "config.json").write_text(json.dumps(pool, indent=2))
    return out


def copy_st_files(arch: Path, out: Path) -> None:
    """Pooling, tokenizer and sentence-transformers files; tokenizer files from MiniLM when absent."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ST_FILES:
        src = arch / name if (arch / name).is_file() else ARCHS["minilm"] / name
        if src.is_file():
            shutil.copyfile(src, out / name)
    (out / "1_Pooling").mkdir(exist_ok=True)
    shutil.copyfile(arch / "1_Pooling" / "config.json", out / "1_Pooling" / "config.json")


def matmul_params(config: dict[str, Any]) -> int:
    """Weights that multiply every token: Q, K, V, output and the two FFN matrices, all layers."""
    h, ff, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return layers * (4 * h * h + 2 * h * ff)


def model_flops(lengths: np.ndarray, config: dict[str, Any]) -> float:
    """Model FLOPs to encode sequences of ``lengths`` tokens (padding excluded).

    2 x matmul weights per token, plus attention: QK^T and PV, 2 x n x h each per token per
    layer, for a sequence of n tokens. Embedding lookups, LayerNorm, GELU, softmax and the
    pooler (one h x h product per sequence) are left out, as MFU conventions do.

    Args:
        lengths: ``(n,)`` real tokens per sequence.
        config: the model's config.json values.
    """
    n = np.asarray(lengths, dtype=np.float64)
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    return float(2 * matmul_params(config) * n.sum() + 4 * layers * h * (n * n).sum())


class Budget:
    """Wall-clock budget of a script: sections ask whether a step still fits before starting it."""

    def __init__(self, seconds: float):
        self.start = time.perf_counter()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def fits(self, need: float, reserve: float = 0.0) -> bool:
        return self.left() - reserve >= need


class Results:
    """A results document rewritten (JSON, and markdown through ``render``) after every update,
    so a run killed at its time limit still leaves what it measured."""

    def __init__(self, out: Path, stem: str, render: Callable[[dict[str, Any]], str]):
        self.out, self.stem, self.render = out, stem, render
        self.doc: dict[str, Any] = {}
        out.mkdir(parents=True, exist_ok=True)

    def update(self, **values: Any) -> None:
        self.doc.update(values)
        self.save()

    def append(self, key: str, item: Any) -> None:
        self.doc.setdefault(key, []).append(item)
        self.save()

    def save(self) -> None:
        for name, text in ((f"{self.stem}.json", json.dumps(self.doc, indent=2, default=_jsonable) + "\n"),
                           (f"{self.stem}.md", self.render(self.doc))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def timed(fn: Callable[[], Any], sync: Callable[[], None], *, min_seconds: float, min_reps: int = 3,
          max_reps: int = 20, warmup: int = 1) -> dict[str, float]:
    """Median wall time of ``fn`` after ``warmup`` calls: at least ``min_reps`` timed calls and
    ``min_seconds`` in all (at most ``max_reps``), each between device syncs."""
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    while len(times) < min_reps or (sum(times) < min_seconds and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "min": min(times), "max": max(times), "reps": len(times)}


def read_jsonl_gz(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def cycle_pool(items: Sequence[Any], n: int, seed: int = 0) -> list[Any]:
    """``n`` items drawn by cycling a seeded permutation of ``items``."""
    order = np.resize(np.random.default_rng(seed).permutation(len(items)), n)
    return [items[i] for i in order]


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join("" if c is None else str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def fmt(v: Any, spec: str = ",.0f") -> str:
    return "" if v is None else format(v, spec)


def cuda_device_info() -> dict[str, Any]:
    """Device name, memory, driver and library versions; the CPU when there is no GPU."""
    import platform

    import torch
    import transformers

    from embedlab.hardware import cpu_model, memory_gib

    info: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__,
                            "python": platform.python_version(), "cpu": cpu_model(),
                            "cores": os.cpu_count(), "memory_gib": memory_gib()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), gpu_memory_gib=p.total_memory / 2**30,
                    multiprocessors=p.multi_processor_count, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    else:
        info["device"] = f"CPU only: {info['cpu']} (dry run)"
    return info
