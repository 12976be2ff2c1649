"""BERT built from a checkpoint's ``config.json`` and ``model.safetensors``, without transformers.

Why: importing transformers and ``AutoModel.from_pretrained`` cost about 2.7 s of CPU in every
worker that loads a model (on the 2-core CI machine: torch itself 1.2 s, reading the safetensors
file 0.02 s), which is most of a CPU job's start-up and the whole difference between a short
job's bf16 and fp32 runs. all-MiniLM-L6-v2, bge and e5 are plain BERT encoders, so this module
builds that architecture (absolute positions, GELU, post-LayerNorm, SDPA attention) with the
checkpoint's own module names, loads its tensors directly and computes what transformers'
``BertModel`` computes (``tests/test_bert.py``: against transformers and sentence-transformers).
Any other architecture, a checkpoint without ``model.safetensors`` or one with remote code goes
through transformers as before (:func:`supports`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ACTIVATIONS = {"gelu": nn.functional.gelu}


# Layers whose weights come from the checkpoint: no random initialization first. (Building on the
# meta device instead would import torch._dynamo, 1.4 s, for its initializers.)
class Linear(nn.Linear):
    def reset_parameters(self) -> None:
        pass


class Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        pass


def supports(path: str | Path) -> bool:
    """Whether the checkpoint in ``path`` is a BERT this module builds (else: transformers)."""
    path = Path(path)
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (cfg.get("model_type") == "bert" and (path / "model.safetensors").is_file()
            and cfg.get("position_embedding_type", "absolute") == "absolute"
            and cfg.get("hidden_act", "gelu") in ACTIVATIONS and not cfg.get("is_decoder", False))


@dataclass(frozen=True)
class Output:
    last_hidden_state: torch.Tensor


class Embeddings(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        h = cfg["hidden_size"]
        self.word_embeddings = Embedding(cfg["vocab_size"], h, padding_idx=cfg.get("pad_token_id", 0))
        self.position_embeddings = Embedding(cfg["max_position_embeddings"], h)
        self.token_type_embeddings = Embedding(cfg.get("type_vocab_size", 2), h)
        self.LayerNorm = nn.LayerNorm(h, eps=cfg.get("layer_norm_eps", 1e-12))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos) + self.token_type_embeddings(
            torch.zeros_like(input_ids))
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        h = cfg["hidden_size"]
        self.num_attention_heads = cfg["num_attention_heads"]
        self.attention_head_size = h // self.num_attention_heads
        self.query, self.key, self.value = Linear(h, h), Linear(h, h), Linear(h, h)
        self.qkv: nn.Module | None = None  # query, key and value as one layer (embedlab/onednn.py)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, _ = x.shape
        if self.qkv is not None:
            q, k, v = self.qkv(x).view(b, n, 3, self.num_attention_heads, -1).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (f(x).view(b, n, self.num_attention_heads, -1).transpose(1, 2)
                       for f in (self.query, self.key, self.value))
        o = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return o.transpose(1, 2).reshape(b, n, -1)


class DenseNorm(nn.Module):
    """``LayerNorm(dense(x) + residual)``: BERT's attention output and layer output."""

    def __init__(self, n_in: int, h: int, eps: float):
        super().__init__()
        self.dense, self.LayerNorm = Linear(n_in, h), nn.LayerNorm(h, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        h = cfg["hidden_size"]
        self.self = SelfAttention(cfg)
        self.output = DenseNorm(h, h, cfg.get("layer_norm_eps", 1e-12))


class Intermediate(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.dense = Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.intermediate_act_fn = ACTIVATIONS[cfg.get("hidden_act", "gelu")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))


class Layer(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = DenseNorm(cfg["intermediate_size"], cfg["hidden_size"], cfg.get("layer_norm_eps", 1e-12))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention.output(self.attention.self(x, mask), x)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg["num_hidden_layers"]))


class NativeBert(nn.Module):
    """A BERT encoder whose ``forward(input_ids=, attention_mask=)`` gives ``.last_hidden_state``."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Output:
        # No mask when no row is padded (as transformers does), so SDPA may take its fastest kernel.
        mask = None if attention_mask is None or bool(attention_mask.all()) else attention_mask[:, None, None, :].bool()
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return Output(x)


def load(path: str | Path) -> NativeBert:
    """The checkpoint in ``path`` (see :func:`supports`) as a :class:`NativeBert`, in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    model = NativeBert(cfg)
    state = {k.removeprefix("bert."): v for k, v in load_file(str(path / "model.safetensors")).items()}
    state = {k: v for k, v in state.items() if k.startswith(("embeddings.", "encoder."))}
    state.pop("embeddings.position_ids", None)
    model.load_state_dict(state, strict=True, assign=True)
    return model.float().eval()
