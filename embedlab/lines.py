"""The raw lines of a corpus file: every readable one, the cut where the rest is lost, and a
clear error when the file changes under the reader.

A gzip file is decompressed here block by block (``zlib``, multi-member files included), so a
file cut short or corrupt in the middle still gives every complete line before the damage; the
damage itself comes out as a :class:`Cut` (the line it falls in, and why), which the corpus
reader turns into a reject. A file that shrinks, vanishes or is replaced while it is read would
silently lose records or mix two versions of the corpus: that raises an :class:`EnvironmentFault`.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from embedlab.files import EnvironmentFault, reporting

BLOCK = 1 << 20  # compressed bytes read at a time
GZIP_MAGIC = b"\x1f\x8b"


class NotCompressedError(ValueError):
    """The file is named ``.gz`` but holds no readable gzip data at all."""


@dataclass(frozen=True)
class Cut:
    """Where a damaged file stops being readable."""

    line: int  # the first line not read whole (the last good line is ``line - 1``)
    reason: str


def iter_lines(path: Path) -> Iterator[tuple[int, bytes] | Cut]:
    """``(line number, raw bytes with the line end)`` for every line, then a :class:`Cut` if any.

    Raises:
        NotCompressedError: a ``.gz`` file whose first bytes are not gzip data.
        EnvironmentFault: the file cannot be read, or shrank, vanished or was replaced meanwhile.
    """
    with reporting(path, "read the corpus file"):
        fh = open(path, "rb")
    with fh:
        before = os.fstat(fh.fileno())
        with reporting(path, "read the corpus file"):
            if path.name.endswith(".gz"):
                yield from gzip_lines(fh, path)
                read = None  # a gzip file cut by a shrink shows as a truncated one
            else:
                yield from enumerate(fh, start=1)
                read = fh.tell()
        check_unchanged(path, before, read)


def check_unchanged(path: Path, before: os.stat_result, read: int | None = None) -> None:
    """Raise unless ``path`` is still the file that was opened, no shorter than it was, and
    (``read``: bytes read to the end) read to its full size."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        raise EnvironmentFault(path, "the corpus file vanished (deleted or moved) while it was read",
                               True) from None
    if (now.st_ino, now.st_dev) != (before.st_ino, before.st_dev):
        raise EnvironmentFault(path, "the corpus file was replaced by another file while it was read",
                               True)
    if now.st_size < before.st_size or (read is not None and read < before.st_size):
        raise EnvironmentFault(path, f"the corpus file shrank from {before.st_size:,} to "
                               f"{now.st_size:,} bytes while it was read", True)


def gzip_lines(fh: BinaryIO, path: Path | str) -> Iterator[tuple[int, bytes] | Cut]:
    """:func:`iter_lines` of a gzip stream already open (a local file or an object store's)."""
    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = bytearray()  # the line being read; a line of many MB grows it, never re-scans it
    line = 0
    raw = fh.read(BLOCK)
    if raw and not raw.startswith(GZIP_MAGIC):
        raise NotCompressedError(f"{path}: cannot read the file: not gzip data (it starts with {raw[:4]!r})")
    while raw:
        data, problem, padding = b"", None, False
        while raw:
            if decomp.eof:  # the next member of a multi-member file, or padding after the last
                if len(raw) < 2:
                    raw += fh.read(BLOCK)
                if not raw.startswith(GZIP_MAGIC):
                    if raw.strip(b"\0"):
                        problem = "bytes after the end of the gzip data"
                    padding, raw = True, b""
                    break
                decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out, error = _inflate(decomp, raw)
            data += out
            if error is not None:
                problem = f"the gzip data is corrupt ({error})"
                break
            raw = decomp.unused_data if decomp.eof else b""
        parts = data.split(b"\n")
        for text in parts[:-1]:
            line += 1
            yield line, bytes(pending) + text + b"\n"
            pending.clear()
        pending += parts[-1]
        if problem:
            yield _cut(line, pending, problem)
            return
        if padding:
            break
        raw = fh.read(BLOCK)
    if not decomp.eof:
        if line == 0 and not pending:
            raise NotCompressedError(f"{path}: cannot read the file: its gzip data ends before any line")
        yield _cut(line, pending, "the gzip file is truncated (it ends before its end marker)")
    elif pending:
        yield line + 1, bytes(pending)


def _inflate(decomp, raw: bytes) -> tuple[bytes, zlib.error | None]:
    """Decompress ``raw``; on corrupt data, everything before the damage and the error."""
    before = decomp.copy()
    try:
        return decomp.decompress(raw), None
    except zlib.error as e:  # zlib returns nothing from a failed call: redo it in small steps
        out = bytearray()
        for i in range(0, len(raw), 256):
            try:
                out += before.decompress(raw[i:i + 256])
            except zlib.error:
                break
        return bytes(out), e


def _cut(line: int, pending: bytes | bytearray, why: str) -> Cut:
    lost = (f"line {line + 1} is cut off after {len(pending):,} bytes" if pending
            else f"whatever followed line {line} is lost")
    return Cut(line + 1, f"{why}; the last good line is {line}, {lost}")
