"""A native BERT's Linear layers laid out once for oneDNN's bf16 kernels on the CPU.

``nn.Linear`` at bf16 on the CPU goes through oneDNN, which takes the weight in the layout the
caller holds it and adds the bias in a separate pass. Here each weight is reordered once, at
load time, into oneDNN's blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, what
inductor's freezing pass does for compiled CPU graphs), the bias is fused into the matmul, the
intermediate layer's GELU is fused as its post-op, and query, key and value become one matmul.
Measured on all-MiniLM-L6-v2 at bf16 over 200 SciFact documents on the 2-core AVX512-BF16 EPYC:
8.4 -> 7.6 CPU seconds for the forward passes, vectors at cosine >= 0.9999 to the unpacked bf16
model (``tests/test_bert.py``). fp32 keeps torch's own kernels (already at the machine's matmul
ceiling, and its promise of sentence-transformers' vectors).
"""

from __future__ import annotations

import torch
from torch import nn

from embedlab.bert import NativeBert


def available() -> bool:
    """Whether this torch build has oneDNN's prepacked linear ops."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PackedLinear(nn.Module):
    """``act(x W^T + b)`` with ``W`` in oneDNN's layout; ``act`` is "none" or "gelu" (erf)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, act: str = "none"):
        super().__init__()
        self.weight = nn.Parameter(torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None),
                                   requires_grad=False)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.act, self.algorithm = act, ("none" if act == "gelu" else "")
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.act, [], self.algorithm)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, act={self.act}"


def pack_bert(model: NativeBert) -> NativeBert:
    """``model`` (on the CPU, bf16) with its Linear layers packed, in place; GELU and QKV fused."""
    for layer in model.encoder.layer:
        sa = layer.attention.self
        sa.qkv = PackedLinear(torch.cat([sa.query.weight, sa.key.weight, sa.value.weight]),
                              torch.cat([sa.query.bias, sa.key.bias, sa.value.bias]))
        del sa.query, sa.key, sa.value
        out = layer.attention.output
        out.dense = PackedLinear(out.dense.weight, out.dense.bias)
        inter = layer.intermediate  # GELU: the one activation embedlab.bert builds
        layer.intermediate = PackedLinear(inter.dense.weight, inter.dense.bias, "gelu")
        layer.output.dense = PackedLinear(layer.output.dense.weight, layer.output.dense.bias)
    return model
