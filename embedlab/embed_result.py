"""What an embed run did: counts, timings, the cluster and encoder it ran on, and its summary."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedlab.config import to_jsonable
from embedlab.store import Store


@dataclass
class EmbedResult:
    """What an embed run did. ``ok`` is False when any input record was rejected."""

    out: Path
    corpus: str = ""  # the file or folder read
    corpus_format: str = ""  # beir, jsonl, parquet or txt, as read
    documents: int = 0
    chunks: int = 0
    tokens: int = 0
    partitions: int = 0
    partitions_encoded: int = 0
    partitions_skipped: int = 0
    partitions_resent: int = 0  # sent again because the worker holding them died
    rejected: int = 0
    repaired_documents: int = 0  # embedded with lone surrogates replaced by U+FFFD
    truncated_documents: int = 0
    truncated_tokens: int = 0
    long_chunks: dict[str, int] = field(default_factory=dict)  # prechunked rows longer than the window:
    # long_chunks_split (cut into long_chunk_windows windows) or long_chunks_refused (rejected)
    reencoded_fp32: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    startup_seconds: float = 0.0  # job start to every worker holding its encoder
    encode_wall_seconds: float = 0.0  # first partition sent to last one landed
    forward_seconds: float = 0.0  # summed over workers
    padding_waste: float = 0.0  # fraction of the tokens fed to the model that were padding
    splits: int = 0  # corpus splits planned (0: the driver read the corpus itself, as with limit)
    input_wait_seconds: float = 0.0  # summed over workers: the encoder waited for read + tokenize
    writer_wait_seconds: float = 0.0  # summed over workers: the encoder waited for the writer
    cluster: dict[str, Any] = field(default_factory=dict)
    encoder: dict[str, Any] = field(default_factory=dict)  # as the first worker reported it

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def encoder_busy(self) -> float:
        """Fraction of the encode phase's wall time that the workers spent in forward passes."""
        workers = max(1, int(self.cluster.get("workers", 1)))
        return self.forward_seconds / (workers * self.encode_wall_seconds) if self.encode_wall_seconds else 0.0

    @property
    def rejects_path(self) -> Path:
        return Store(self.out).rejects_path

    def to_json(self) -> dict[str, Any]:
        d = to_jsonable(dataclasses.asdict(self))
        d.update(chunks_per_second=self.chunks_per_second, tokens_per_second=self.tokens_per_second,
                 encoder_busy=self.encoder_busy, ok=self.ok, rejects_path=str(self.rejects_path))
        return d

    def summary(self) -> str:
        lines = [
            f"corpus      {self.corpus} ({self.corpus_format})",
            f"documents   {self.documents:,}",
            f"chunks      {self.chunks:,}",
            f"tokens      {self.tokens:,}",
            f"partitions  {self.partitions:,} ({self.partitions_encoded:,} encoded, "
            f"{self.partitions_skipped:,} already in the store and skipped"
            + (f", {self.partitions_resent:,} re-sent after a worker died" if self.partitions_resent else "")
            + ")",
            f"rejected    {self.rejected:,}" + (f"  -> {self.rejects_path}" if self.rejected else ""),
        ]
        if self.repaired_documents:
            lines.append(f"repaired    {self.repaired_documents:,} documents (lone surrogates -> U+FFFD)")
        if self.truncated_documents:
            lines.append(f"truncated   {self.truncated_documents:,} documents lost "
                         f"{self.truncated_tokens:,} tokens past the model's max length")
        if self.long_chunks.get("long_chunks_split"):
            lines.append(f"long chunks {self.long_chunks['long_chunks_split']:,} chunks longer than the window were "
                         f"cut into {self.long_chunks['long_chunk_windows']:,} windows (ID#0, ID#1, ...)")
        if self.long_chunks.get("long_chunks_refused"):
            lines.append(f"long chunks {self.long_chunks['long_chunks_refused']:,} chunks longer than the window "
                         "were refused (listed with the rejects)")
        if self.reencoded_fp32:
            lines.append(f"re-encoded  {len(self.reencoded_fp32):,} chunks in fp32 "
                         "(non-finite vectors at the requested dtype)")
        if not self.encoder:  # nothing to encode: no cluster was started, no model loaded
            return "\n".join([*lines, f"wall time   {self.wall_seconds:.1f} s (every partition was already "
                               "in the store: no cluster started)", f"store       {self.out}"])
        lines += [
            f"wall time   {self.wall_seconds:.1f} s (start-up {self.startup_seconds:.1f} s: cluster, "
            f"model load {self.encoder.get('load_seconds', 0.0):.1f} s)",
            f"throughput  {self.chunks_per_second:,.1f} chunks/s, {self.tokens_per_second:,.0f} tokens/s",
            f"encoder     busy {self.encoder_busy:.0%} of the encode phase "
            f"({self.encode_wall_seconds:.1f} s), padding {self.padding_waste:.1%} of tokens",
            *([f"input       {self.splits:,} splits read on the workers; the encoder waited "
               f"{self.input_wait_seconds:.1f} s for input, {self.writer_wait_seconds:.1f} s for the writer"]
              if self.splits else []),
            f"batches     length-sorted, <= {self.encoder.get('batch_size')} chunks"
            + (f" and <= {self.encoder['max_batch_tokens']:,} padded tokens"
               if self.encoder.get("max_batch_tokens") else ""),
            f"workers     {self.cluster.get('workers')} x {self.encoder.get('torch_threads')} torch threads "
            f"({self.cluster.get('kind')}), {self.encoder.get('device')} {self.encoder.get('dtype')}"
            + (", compiled" if self.encoder.get("compiled") else ", eager")
            + (f" (compile failed: {self.encoder['compile_error']})" if self.encoder.get("compile_error") else ""),
            *(f"precision   {note}" for note in self.encoder.get("dtype_notes", [])),
            f"store       {self.out}",
        ]
        return "\n".join(lines)
