"""embedlab's int8: every Linear layer with int8 weights and 8-bit activations, quantized at load time.

Weights are int8 with one symmetric scale per output channel; activations are quantized per
forward pass to uint8 with the batch's own range (dynamic quantization), and the int32
products are rescaled to fp32. Everything between the Linear layers (attention, softmax,
LayerNorm, GELU, pooling) stays fp32.

What sets the accuracy is the activations' resolution, so two things widen it:

- The first token of each sequence ([CLS]) gets a range of its own. In BERT it is an outlier:
  at the inputs of the FFN layers its largest activation is 5-10x any other token's (all-MiniLM-L6-v2
  on SciFact: 28 against a median of 3-4), so a range shared with it left every other token a
  few dozen levels. Quantized apart (a second small product for the batch's first rows), on
  all of SciFact (5,183 documents, 256 tokens) the minimum cosine to fp32 rose from 0.990 to
  0.997 (mean 0.9951 -> 0.9984) and nDCG@10 went from 64.24 to 64.81 (fp32: 64.51), at ~3% of
  the speed. A sweep on 100 documents (fake-quantized in fp32) put it near per-token scales
  (mean 0.9989), which need a fused kernel torch lacks to be fast; with it, keeping any one
  kind of Linear (q, k, v, attention out, FFN in, FFN out) out of int8 adds at most 0.0006.
- torch's ``quantize_dynamic`` quantizes activations to 7 bits (``reduce_range=True``), because
  without VNNI the x86 int8 kernels add pairs of u8 x s8 products in saturating int16 and a full
  8-bit range can overflow. CPUs with VNNI (AVX512-VNNI, AVX-VNNI) or AMX accumulate in int32
  directly, so there the full 8 bits are used: min cosine 0.972 -> 0.992 at the same speed.

SmoothQuant-style channel scaling did not help per-channel weights (benchmarks/results/cpu_precision.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection

import torch

from embedlab.hardware import NATIVE_INT8_FLAGS, has_any


def full_range_activations(flags: Collection[str]) -> bool:
    """Whether a CPU with feature ``flags`` may quantize activations to all 8 bits (no int16 overflow)."""
    return has_any(frozenset(flags), NATIVE_INT8_FLAGS)


class Int8Linear(torch.nn.Module):
    """``y = x W^T + b`` with int8 ``W`` (per-output-channel scales) and ``x`` quantized per call.

    A ``(batch, tokens, features)`` input is quantized in two parts: the first token of every row
    and the rest, each with its own range (see the module's docstring).

    Args:
        linear: the fp32 layer; its weights are quantized once, here.
        full_range: quantize activations to 8 bits (VNNI / AMX CPUs) rather than 7.
    """

    def __init__(self, linear: torch.nn.Linear, full_range: bool):
        super().__init__()
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1).clamp(min=1e-12) / 127.0).double()
        with warnings.catch_warnings():  # torch's notice that quantized tensors are deprecated
            warnings.simplefilter("ignore")
            qw = torch.quantize_per_channel(w, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
        bias = linear.bias.detach().float() if linear.bias is not None else None
        self.packed = torch.ops.quantized.linear_prepack(qw, bias)
        self.reduce_range = not full_range
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] < 2:
            return torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range)
        if x.requires_grad:
            x = x.clone()
        first = x[:, 0].clone()
        x[:, 0] = 0.0  # out of the batch's range (0 is always in it), put back below
        y = torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range)
        x[:, 0] = first
        y[:, 0] = torch.ops.quantized.linear_dynamic(first, self.packed, self.reduce_range)
        return y

    def extra_repr(self) -> str:
        bits = 7 if self.reduce_range else 8
        return f"in_features={self.in_features}, out_features={self.out_features}, activations={bits} bits"


def quantize_int8(model: torch.nn.Module, full_range: bool) -> torch.nn.Module:
    """``model`` (fp32, on the CPU) with every ``nn.Linear`` replaced by an :class:`Int8Linear`, in place."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):  # embedlab.bert's Linear too
                setattr(module, child_name, Int8Linear(child, full_range))
    return model
