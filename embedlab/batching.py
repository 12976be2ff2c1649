"""Length-sorted batches, and what the padding in them cost: numbers in, numbers out (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EncodeStats:
    """Where an encoder's time went: forward seconds, and real vs padded tokens."""

    forward_seconds: float = 0.0
    batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0  # rows x longest row, summed over batches

    def add(self, seconds: float, tokens: int, padded: int) -> None:
        self.forward_seconds += seconds
        self.batches += 1
        self.tokens += tokens
        self.padded_tokens += padded

    @property
    def padding_waste(self) -> float:
        """Fraction of the tokens fed to the model that were padding."""
        return 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


def plan_batches(lengths: np.ndarray, max_rows: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Batches of indices, longest sequences first.

    Args:
        lengths: ``(n,)`` token count of each sequence.
        max_rows: most sequences in one batch.
        max_tokens: most padded tokens (rows x longest row) in one batch; None: no budget.
            A sequence longer than the budget still gets a batch of its own.

    Returns:
        Index arrays that together hold every index once, each sorted by decreasing length.
    """
    order = np.argsort(-lengths, kind="stable")
    batches = []
    i, n = 0, len(order)
    while i < n:
        rows = max_rows
        if max_tokens is not None:
            rows = max(1, min(max_rows, max_tokens // max(1, int(lengths[order[i]]))))
        batches.append(order[i:i + rows])
        i += rows
    return batches
