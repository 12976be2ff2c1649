"""BERT without padding: a batch's tokens packed into one ``(tokens, hidden)`` matrix.

The CUDA default for BERT-family encoders at fp16/bf16. A padded batch spends its matmuls,
LayerNorms and attention on pad tokens as well; packed, the Linear layers and LayerNorms run on
real tokens only and attention runs per sequence through ``torch.nn.attention.varlen.varlen_attn``
(flash attention over cumulative sequence offsets). Measured on an H100 with random weights
(``benchmarks/results/encode_gpu.md``, variants): 1.43x the padded SDPA path for
all-MiniLM-L6-v2's shape and 1.07x for bge-base's, vectors within cosine 0.9999986 of it.

Off CUDA (or without ``varlen_attn``) the same packed forward runs attention as a loop of
per-sequence SDPA calls: slow, there to test the packed arithmetic on a CPU against the padded
model (``tests/test_encoder.py``). It uses a transformers ``BertModel``'s modules in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def varlen_attention_available(device: str, torch_dtype: Any) -> bool:
    """Whether torch's flash varlen attention can run here (CUDA, fp16 or bf16)."""
    import torch

    if not device.startswith("cuda") or torch_dtype not in (torch.float16, torch.bfloat16):
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def packable(model: Any) -> bool:
    """A plain BERT encoder (absolute positions), whose forward :class:`PackedBert` reproduces."""
    from embedlab.bert import NativeBert

    if isinstance(model, NativeBert):
        return True
    config = getattr(model, "config", None)
    return (type(model).__name__ == "BertModel"
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and not getattr(config, "is_decoder", False))


class PackedBert:
    """The pooled (and normalized) vectors of a batch computed on packed tokens."""

    def __init__(self, model: Any, device: str, pooling: str, normalize: bool, flash: bool):
        self.model, self.device, self.pooling, self.normalize, self.flash = model, device, pooling, normalize, flash

    def _attend(self, q, k, v, cu: np.ndarray, cu_t, max_len: int):
        import torch

        if self.flash:
            from torch.nn.attention.varlen import varlen_attn

            return varlen_attn(q, k, v, cu_t, cu_t, max_len, max_len)
        out = torch.empty_like(q)
        for s, e in zip(cu[:-1], cu[1:]):
            qs, ks, vs = (t[s:e].transpose(0, 1)[None] for t in (q, k, v))
            out[s:e] = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs)[0].transpose(0, 1)
        return out

    def pooled(self, batch: Sequence[np.ndarray]) -> Any:
        """``(rows, dim)`` float32 tensor on the device; call under ``torch.inference_mode``."""
        import torch

        dev = self.device
        lens = np.fromiter((len(x) for x in batch), dtype=np.int64, count=len(batch))
        cu = np.concatenate([[0], np.cumsum(lens)])
        host = np.concatenate([np.concatenate(batch).astype(np.int64),
                               np.concatenate([np.arange(n) for n in lens]),
                               np.repeat(np.arange(len(lens)), lens)])
        pinned = torch.from_numpy(host).pin_memory() if dev.startswith("cuda") else torch.from_numpy(host)
        tokens, pos, seg = pinned.to(dev, non_blocking=True).view(3, -1)
        cu_t = torch.from_numpy(cu.astype(np.int32)).to(dev)
        emb = self.model.embeddings
        x = emb.LayerNorm(emb.word_embeddings(tokens) + emb.position_embeddings(pos)
                          + emb.token_type_embeddings(torch.zeros_like(tokens)))
        max_len = int(lens.max())
        for layer in self.model.encoder.layer:
            sa = layer.attention.self
            heads, dh = sa.num_attention_heads, sa.attention_head_size
            q, k, v = (f(x).view(-1, heads, dh) for f in (sa.query, sa.key, sa.value))
            o = self._attend(q, k, v, cu, cu_t, max_len).reshape(-1, heads * dh)
            x = layer.attention.output.LayerNorm(layer.attention.output.dense(o) + x)
            x = layer.output.LayerNorm(layer.output.dense(layer.intermediate.intermediate_act_fn(
                layer.intermediate.dense(x))) + x)
        x = x.float()
        if self.pooling == "cls":
            out = x[cu_t[:-1].long()]
        elif self.pooling == "max":
            out = torch.full((len(lens), x.shape[1]), -1e9, device=dev).index_reduce_(0, seg, x, "amax")
        else:
            sizes = torch.from_numpy(lens).to(dev).float()
            out = torch.zeros((len(lens), x.shape[1]), device=dev).index_add_(0, seg, x) / sizes[:, None]
        return torch.nn.functional.normalize(out, p=2, dim=1) if self.normalize else out
