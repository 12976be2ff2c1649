"""A model folder loaded as a torch module and a tokenizer: natively for BERT, else by transformers.

A plain BERT checkpoint with ``model.safetensors`` and ``tokenizer.json`` (all-MiniLM-L6-v2, bge,
e5, ...) loads without importing transformers (:mod:`embedlab.bert`; about 2.7 s of CPU less per
worker start): the Rust tokenizer straight from ``tokenizer.json``, truncating as transformers'
fast tokenizer does. Everything else, and anything with ``trust_remote_code``, goes through
``AutoModel`` / ``AutoTokenizer`` as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import embedlab.bert as bert


@dataclass(frozen=True)
class Checkpoint:
    model: Any  # torch.nn.Module; forward(input_ids=, attention_mask=) -> .last_hidden_state
    tokenizer: Any  # a Rust ``tokenizers.Tokenizer`` or a transformers fast tokenizer (the chunker takes both)
    tokenize: Callable[[Sequence[str]], list[np.ndarray]]  # special tokens added, truncated
    pad_id: int
    native: bool  # built by embedlab.bert, without transformers


def load_checkpoint(path: str, max_length: int, trust_remote_code: bool = False) -> Checkpoint:
    """The model and tokenizer in the folder ``path``, truncating token ids at ``max_length``."""
    if not trust_remote_code and bert.supports(path) and (Path(path) / "tokenizer.json").is_file():
        return Checkpoint(bert.load(path), *_rust_tokenizer(path, max_length), native=True)
    return _transformers_checkpoint(path, max_length, trust_remote_code)


def _rust_tokenizer(path: str, max_length: int) -> tuple[Any, Callable, int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()  # the one the encoder exposes (the chunker cuts whole documents)
    truncating = Tokenizer.from_str(tok.to_str())
    truncating.enable_truncation(max_length)

    def tokenize(texts: Sequence[str]) -> list[np.ndarray]:
        encoded = truncating.encode_batch(list(texts), add_special_tokens=True)
        return [np.asarray(e.ids, dtype=np.int32) for e in encoded]

    pad = tok.token_to_id(_pad_token(Path(path)))
    return tok, tokenize, pad if pad is not None else 0


def _pad_token(path: Path) -> str:
    """The pad token's text, as the checkpoint's tokenizer files name it."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            value = json.loads((path / name).read_text(encoding="utf-8")).get("pad_token")
        except (OSError, ValueError):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            return value
    return "[PAD]"


def _transformers_checkpoint(path: str, max_length: int, trust_remote_code: bool) -> Checkpoint:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)
    model.eval()  # dropout off: a model left in train mode silently changes every vector

    def tokenize(texts: Sequence[str]) -> list[np.ndarray]:
        enc = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)
        return [np.asarray(ids, dtype=np.int32) for ids in enc["input_ids"]]

    pad = tokenizer.pad_token_id
    return Checkpoint(model, tokenizer, tokenize, pad if pad is not None else 0, native=False)
