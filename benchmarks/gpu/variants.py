"""Encoder variants measured against embedlab's CUDA path (``Encoder.encode_ids``), never adopted
without a GPU measurement: pinned memory with non-blocking copies and one sync per pass, fixed
shapes run eagerly, as a CUDA graph or torch.compile'd, and unpadded (variable-length) attention.

Each variant takes a loaded :class:`embedlab.encoder.Encoder` and uses its model's weights, so
its vectors can be compared with the encoder's own. All run on a CPU too (CUDA graphs and
flash varlen attention excepted, which say so), which is how ``--dry-run`` checks them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from embedlab.batching import plan_batches


def pool(hidden, mask, mode: str, normalize: bool):
    """Pool ``(b, L, h)`` hidden states over a ``(b, L)`` mask (cls, max or mean) in fp32, then L2-normalize."""
    import torch

    hidden = hidden.float()
    if mode == "cls":
        out = hidden[:, 0]
    elif mode == "max":
        out = hidden.masked_fill(mask.unsqueeze(-1) == 0, -1e9).max(dim=1).values
    else:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        out = (hidden * m).sum(dim=1) / torch.clamp(m.sum(dim=1), min=1e-9)
    return torch.nn.functional.normalize(out, p=2, dim=1) if normalize else out


def pad(batch: Sequence[np.ndarray], pad_id: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(b, width)`` int64 ids and mask for a batch of token-id arrays (width: the longest)."""
    width = width or max(len(x) for x in batch)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for r, x in enumerate(batch):
        ids[r, :len(x)] = x
        mask[r, :len(x)] = 1
    return ids, mask


class AsyncEncoder:
    """The encoder's batches with pinned host buffers, non-blocking copies and no per-batch sync.

    embedlab's path pads a batch, copies it (pageable memory, so the copy waits), runs the model
    and copies the pooled vectors back with ``.cpu()``, which waits for the GPU: the host pads the
    next batch while the GPU idles. Here the vectors stay on the GPU until the pass ends, so the
    host pads batch i+1 while the GPU runs batch i. Two pinned buffers alternate, each reused only
    after the event recorded behind its copy.

    With ``drop_full_mask``, a batch whose rows all have the same length goes to the model with no
    attention mask: transformers then skips its check of the mask (``mask.all()``, a device sync
    per batch) and SDPA may pick its flash kernel, which takes no mask. Length-sorted 256-token
    chunks are mostly such batches.
    """

    def __init__(self, encoder, drop_full_mask: bool = False):
        import torch

        self.enc = encoder
        self.device = encoder.device
        self.cuda = self.device.startswith("cuda")
        self.torch = torch
        self.drop_full_mask = drop_full_mask

    def encode_ids(self, ids: Sequence[np.ndarray], batch_size: int, max_batch_tokens: int | None = None):
        """``(n, dim)`` float32 numpy vectors in input order (one device-to-host copy per pass)."""
        return self.encode_ids_device(ids, batch_size, max_batch_tokens).cpu().numpy()

    def encode_ids_device(self, ids: Sequence[np.ndarray], batch_size: int, max_batch_tokens: int | None = None):
        """``(n, dim)`` float32 vectors in input order, left on the encoder's device."""
        torch = self.torch
        n = len(ids)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        batches = plan_batches(lengths, batch_size, max_batch_tokens)
        out = torch.empty((n, self.enc.dim), dtype=torch.float32, device=self.device)
        cap = max(len(b) * int(lengths[b[0]]) for b in batches)
        bufs = [[torch.empty(cap, dtype=torch.int64, pin_memory=self.cuda) for _ in range(2)] for _ in range(2)]
        events = [None, None]
        info = self.enc.info
        with torch.inference_mode():
            for k, idx in enumerate(batches):
                slot = k % 2
                if events[slot] is not None:
                    events[slot].synchronize()
                rows, width = len(idx), int(lengths[idx[0]])
                host = [buf[:rows * width].view(rows, width) for buf in bufs[slot]]  # contiguous, pinned
                ids_np, mask_np = pad([ids[j] for j in idx], self.enc.pad_id, width)
                host[0].numpy()[:] = ids_np
                host[1].numpy()[:] = mask_np
                dev = [h.to(self.device, non_blocking=True) for h in host]
                if self.cuda:
                    events[slot] = torch.cuda.Event()
                    events[slot].record()
                full = self.drop_full_mask and int(lengths[idx[-1]]) == width
                hidden = self.enc.model(input_ids=dev[0], attention_mask=None if full else dev[1]).last_hidden_state
                out[torch.from_numpy(idx).to(self.device, non_blocking=True)] = pool(
                    hidden, dev[1], info.pooling, info.normalize)
            return out


def fixed_batches(ids: Sequence[np.ndarray], batch: int, width: int, pad_id: int) -> list[tuple]:
    """Every sequence padded to ``width`` in batches of exactly ``batch`` rows (the last one filled
    by repeating rows), the one shape a CUDA graph or a static compile needs."""
    n = -(-len(ids) // batch) * batch
    seqs = [ids[i % len(ids)][:width] for i in range(n)]
    return [pad(seqs[i:i + batch], pad_id, width) for i in range(0, n, batch)]


class FixedShapeRunner:
    """One forward function over fixed-shape batches: ``eager``, ``graph`` (CUDA graph capture and
    replay) or ``compile`` (torch.compile, static shapes; ``mode`` as torch.compile takes it)."""

    def __init__(self, encoder, kind: str, batch: int, width: int, mode: str | None = None):
        import torch

        self.torch, self.enc, self.kind = torch, encoder, kind
        self.device = encoder.device
        info = encoder.info
        model = encoder.model

        def forward(i, m):
            return pool(model(input_ids=i, attention_mask=m).last_hidden_state, m, info.pooling, info.normalize)

        self.forward: Callable = forward
        if kind == "compile":
            self.forward = torch.compile(forward, dynamic=False, mode=mode)
        elif kind == "graph":
            if not self.device.startswith("cuda"):
                raise RuntimeError("CUDA graphs need a CUDA device")
            self.static_ids = torch.ones((batch, width), dtype=torch.int64, device=self.device)
            self.static_mask = torch.ones((batch, width), dtype=torch.int64, device=self.device)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.inference_mode(), torch.cuda.stream(side):
                for _ in range(3):
                    forward(self.static_ids, self.static_mask)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(self.graph):
                self.static_out = forward(self.static_ids, self.static_mask)
        elif kind != "eager":
            raise ValueError(f"unknown runner {kind!r}")

    def run(self, batches: list[tuple]) -> np.ndarray:
        torch = self.torch
        outs = []
        with torch.inference_mode():
            for ids_np, mask_np in batches:
                i = torch.from_numpy(ids_np).to(self.device, non_blocking=True)
                m = torch.from_numpy(mask_np).to(self.device, non_blocking=True)
                if self.kind == "graph":
                    self.static_ids.copy_(i)
                    self.static_mask.copy_(m)
                    self.graph.replay()
                    outs.append(self.static_out.clone())
                else:
                    outs.append(self.forward(i, m))
            return torch.cat(outs).cpu().numpy()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine between two ``(n, d)`` arrays."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float((a * b).sum(1).min())
