"""A stream's feed: complete JSONL lines read from where the last commit left off.

The reader (:class:`Tail`) follows a watched source, every ``*.jsonl`` file of a folder or one
JSONL file, and stamps each record with its :class:`Mark`: the file, the byte range and the line
number of the record's line. The stream commits a :class:`FeedPosition` (per file: the byte
offset and line number just after the last record of the batch, and the sha256 of that last
line) in the *same* commit record as the micro-batch it covers, under the store meta key
``feed:<resolved watched path>``. A restart starts each file at its committed offset, so it reads
only the records after the last committed one; records of a batch that was not committed are
read again, and the store's content-hash classification makes that harmless.

Before trusting an offset the reader checks that the file still holds, just before it, the line
the position names (its sha256). A file that was truncated, rotated or rewritten under the same
name fails that check and is read from its start (the store is idempotent by content hash);
:attr:`Tail.rewound` names such files.

Read-ahead is bounded: lines are read in blocks and queued at most ``read_ahead`` records ahead
of the batch being committed, so a feed of billions of records never sits in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedlab.config import CorpusConfig
from embedlab.corpus import Reject
from embedlab.files import reporting
from embedlab.incremental import FeedOp, parse_feed_line

FEED_PREFIX = "feed:"  # store meta key of a feed's position: FEED_PREFIX + its resolved path
READ_BLOCK = 1 << 20  # bytes read at a time (a longer line is read whole)


@dataclass(frozen=True)
class Mark:
    """Where one record's line lies in its file."""

    file: str  # the file's name (in the watched folder, or the watched file's own name)
    start: int  # byte offset of the line
    end: int  # byte offset just after it: where reading resumes
    line: int  # its 1-based line number
    sha256: str  # of the line's bytes, newline included


@dataclass(frozen=True)
class Arrival:
    record: FeedOp | Reject | Any
    seen: float  # time.perf_counter() when the reader first saw the record
    mark: Mark | None = None


@dataclass(frozen=True, kw_only=True)
class FileMark:
    """A file's committed read position."""

    offset: int  # bytes of the file committed (reading resumes here)
    line: int  # lines of the file committed
    last: int  # byte length of the last committed line
    sha256: str  # sha256 of that line: the file must still hold it just before ``offset``

    @classmethod
    def of(cls, mark: Mark) -> FileMark:
        return cls(offset=mark.end, line=mark.line, last=mark.end - mark.start, sha256=mark.sha256)


@dataclass(frozen=True, kw_only=True)
class FeedPosition:
    """Where the committed part of one feed ends: per file, and the records committed in all."""

    source: str  # the watched path, resolved
    files: dict[str, FileMark] = field(default_factory=dict)
    records: int = 0  # records of this feed committed by every run so far

    @property
    def key(self) -> str:
        return FEED_PREFIX + self.source

    @classmethod
    def of(cls, watch: Path, meta: dict[str, Any]) -> FeedPosition:
        """The committed position of the feed ``watch`` in a store's log meta (empty: none)."""
        source = str(Path(watch).resolve())
        value = meta.get(FEED_PREFIX + source)
        if not value:
            return cls(source=source)
        return cls(source=source, records=int(value["records"]),
                   files={k: FileMark(**v) for k, v in value["files"].items()})

    def after(self, marks: list[Mark]) -> FeedPosition:
        """The position once a batch whose records carry ``marks`` (in read order) commits."""
        files = dict(self.files)
        for m in marks:
            files[m.file] = FileMark.of(m)
        return FeedPosition(source=self.source, files=files, records=self.records + len(marks))

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "files": {k: vars(v) for k, v in sorted(self.files.items())}}

    def describe(self) -> str:
        where = ", ".join(f"{k} line {v.line:,} (byte {v.offset:,})" for k, v in sorted(self.files.items()))
        return f"{self.records:,} records committed before; resuming after {where}" if where else "from the start"


def holds(path: Path, mark: FileMark) -> bool:
    """True when ``path`` still holds the committed last line just before the committed offset."""
    try:
        with open(path, "rb") as fh:
            fh.seek(mark.offset - mark.last)
            line = fh.read(mark.last)
    except (OSError, ValueError):
        return False
    return len(line) == mark.last and hashlib.sha256(line).hexdigest() == mark.sha256


def read_lines(fh: Any, offset: int, block: int) -> bytes:
    """The complete lines from ``offset`` in at most about ``block`` bytes (one whole line when a
    single line is longer); empty when no complete line waits."""
    fh.seek(offset)
    data = fh.read(block)
    while data and b"\n" not in data:
        more = fh.read(block)
        if not more:
            return b""  # a partial last line: it waits for its newline
        data += more
    return data[:data.rfind(b"\n") + 1]


class Tail(threading.Thread):
    """Reads complete JSONL lines from the watched source as they appear; stamps their arrival.

    Args:
        path: a folder (its ``*.jsonl`` files, hidden ones skipped) or one JSONL file.
        reader: field names of a record.
        out: where :class:`Arrival` items go (a bounded queue holds the read-ahead down).
        poll_s: pause between looks at the source.
        max_records: stop after this many records (None: until :meth:`stop`).
        start: committed positions per file name; those files are read from there.
    """

    def __init__(self, path: Path, reader: CorpusConfig, out: queue.Queue, poll_s: float,
                 max_records: int | None, start: dict[str, FileMark] | None = None,
                 block: int = READ_BLOCK):
        super().__init__(name="embedlab-stream-tail", daemon=True)
        self.path, self.reader, self.out = path, reader, out
        self.poll_s, self.max_records, self.block = poll_s, max_records, block
        self.start_at = dict(start or {})
        self.offsets: dict[str, int] = {}
        self.lines: dict[str, int] = {}
        self.rewound: list[str] = []  # files that changed under their committed position
        self.count = 0  # records read (queued) by this reader
        self.done = threading.Event()
        self._stop_event = threading.Event()
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set() and not self._full():
                self.scan()
                self._stop_event.wait(self.poll_s)
        except BaseException as e:  # surfaced by the main loop
            self.error = e
        finally:
            self.done.set()

    def _full(self) -> bool:
        return self.max_records is not None and self.count >= self.max_records

    def files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(p for p in self.path.glob("*.jsonl") if not p.name.startswith("."))
        return [self.path] if self.path.is_file() else []

    def _begin(self, path: Path) -> None:
        """Start a file seen for the first time at its committed position, if it still holds it."""
        mark = self.start_at.pop(path.name, None)
        if mark is not None and holds(path, mark):
            self.offsets[path.name], self.lines[path.name] = mark.offset, mark.line
        else:
            if mark is not None:
                self.rewound.append(path.name)
            self.offsets[path.name], self.lines[path.name] = 0, 0

    def scan(self) -> None:
        for path in self.files():
            name = path.name
            if name not in self.offsets:
                self._begin(path)
            with reporting(path, "read the watched file"), open(path, "rb") as fh:
                while not self._stop_event.is_set() and not self._full():
                    data = read_lines(fh, self.offsets[name], self.block)
                    if not data:
                        break
                    seen = time.perf_counter()
                    for raw in data.splitlines(keepends=True):
                        start = self.offsets[name]
                        self.offsets[name] = end = start + len(raw)
                        self.lines[name] = line = self.lines[name] + 1
                        rec = parse_feed_line(raw, self.reader, str(path), line)
                        if rec is None:
                            continue
                        mark = Mark(name, start, end, line, hashlib.sha256(raw).hexdigest())
                        if not self._put(Arrival(rec, seen, mark)):
                            return
                        self.count += 1
                        if self._full():
                            return

    def _put(self, arrival: Arrival) -> bool:
        """Queue ``arrival``, waiting while the read-ahead is full; False when stopped first."""
        while not self._stop_event.is_set():
            try:
                self.out.put(arrival, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


def kept_rejects(path: Path, position: FeedPosition, watch: Path) -> list[Reject]:
    """Rejects in the rejects file at ``path`` from lines of ``watch`` at or before ``position``:
    what earlier runs of this feed committed (a torn last line of the file is dropped)."""
    if not position.files or not path.is_file():
        return []
    root = watch if watch.is_dir() else watch.parent
    files = {str((root / k).resolve()): v.line for k, v in position.files.items()}
    kept = []
    with reporting(path, "read the rejects file"):
        text = path.read_bytes().decode("utf-8", errors="replace")
    for row in text.splitlines():
        try:
            r = json.loads(row)
            source = str(Path(r["file"]).resolve())
        except (json.JSONDecodeError, KeyError, TypeError, OSError):
            continue
        if source in files and isinstance(r.get("line"), int) and r["line"] <= files[source]:
            kept.append(Reject(r["file"], r["line"], r.get("doc_id"), r.get("reason", "")))
    return kept


def append_rejects(path: Path, rejects: list[Reject]) -> None:
    """Append ``rejects`` to the rejects file and flush them to disk (before the batch commits)."""
    if not rejects:
        return
    with reporting(path, "append to the rejects file"), open(path, "ab") as fh:
        fh.write("".join(json.dumps(r.to_json()) + "\n" for r in rejects).encode())
        fh.flush()
        os.fsync(fh.fileno())
