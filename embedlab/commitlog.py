"""An append-only commit log: O(1) per commit, fenced writers, checkpoints that readers start from.

Layout (inside a store, ``OUT/_log/``)::

    00000000000000000001.json          one record per commit, named by its sequence number
    00000000000000000002.json          ...
    00000000000000000400.checkpoint.json   the state after record 400
    _last_checkpoint                   {"seq": 400, ...}: where readers start
    _claim-<id>.alive                  the writer's heartbeat (its mtime)

A record is a small JSON object: its sequence number, the claim id of the writer, a time, a
list of *actions* and the sha256 of all that. Actions fold into a :class:`Snapshot`:
``add``/``remove`` set or drop an entry by key (a landed partition, for a store), ``set`` keeps a
value under a key (a feed position, a job's settings), and ``claim``/``release`` name the one
writer. One record holds every action of one commit, so a commit is atomic.

A record is written whole to a hidden temporary file, then hard-linked to its name; ``link``
fails when the name exists, so of two writers committing record N exactly one succeeds, and no
reader sees half a record (where hard links are unsupported, ``O_EXCL`` create; a torn record
is then caught by its checksum and set aside by :meth:`CommitLog.repair_torn_tail`). A writer
first commits a ``claim``; each later commit goes to the number after its own last record, so
a writer whose next number was taken has been fenced off (:class:`FencedError`). A second
writer finding a live claim is refused (:class:`WriterConflictError`, naming the first); a claim
whose process is gone on this host is taken over, any other stale one only with
``takeover=True``. No host-local lock: it holds across hosts sharing a POSIX file system.
Checkpoints come every ``checkpoint_every`` records and at least as rarely as a tenth of the
entries, so a commit's amortized cost stays flat; see docs/design-input-and-control-plane.md.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedlab.claims import Claim

LOG_DIR = "_log"
LAST_CHECKPOINT = "_last_checkpoint"
SEQ_DIGITS = 20
CHECKPOINT_EVERY = 100  # records between checkpoints, at least
CHECKPOINT_FRACTION = 0.1  # ... and at least this fraction of the entries (flat amortized cost)
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


class LogError(RuntimeError):
    pass


class TornRecordError(LogError):
    """A record or checkpoint that does not parse or whose checksum differs."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path


class WriterConflictError(LogError):
    """Another writer holds the log."""


class FencedError(LogError):
    """This writer's claim was taken over; it must stop without committing."""


class SeqTakenError(LogError):
    """The record number a writer tried to create exists already."""


@dataclass
class Snapshot:
    """The log folded up to record ``seq``."""

    seq: int = 0
    entries: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    claim: Claim | None = None
    claim_time: float = 0.0  # time of the holder's last record
    checkpoint_seq: int = 0  # the checkpoint this snapshot was read from (0: none)
    records_read: int = 0  # records read after that checkpoint

    def apply(self, record: dict[str, Any]) -> None:
        for a in record["actions"]:
            op = a["op"]
            if op == "add":
                self.entries[a["key"]] = a["entry"]
            elif op == "remove":
                self.entries.pop(a["key"], None)
            elif op == "set":
                self.meta[a["key"]] = a["value"]
            elif op == "claim":
                self.claim = Claim(**a["claim"])
            elif op == "release":
                self.claim = None
            else:
                raise LogError(f"record {record['seq']}: unknown action {op!r}")
        self.seq = record["seq"]
        if self.claim is not None and record.get("claim") == self.claim.id:
            self.claim_time = record["time"]

    def state(self) -> dict[str, Any]:
        return {"seq": self.seq, "entries": self.entries, "meta": self.meta,
                "claim": asdict(self.claim) if self.claim else None, "claim_time": self.claim_time}


def _digest(obj: dict[str, Any]) -> str:
    body = {k: v for k, v in obj.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _sealed(obj: dict[str, Any]) -> bytes:
    return json.dumps({**obj, "sha256": _digest(obj)}, sort_keys=True, separators=(",", ":")).encode()


def _load(path: Path) -> dict[str, Any] | None:
    """The verified JSON object at ``path``; None when it does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TornRecordError(path, f"torn or damaged ({len(raw)} bytes, not JSON: {e})") from None
    if not isinstance(obj, dict) or obj.get("sha256") != _digest(obj):
        raise TornRecordError(path, "checksum differs from its content (torn or damaged)")
    return obj


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CommitLog:
    """The commit log in folder ``root`` (created on the first write).

    Args:
        root: the log folder, e.g. ``OUT/_log``.
        checkpoint_every: records between checkpoints, at least.
        checkpoint_fraction: and at least this fraction of the entries, so checkpoints cost
            O(1) per commit amortized however many entries there are.
        durable: fsync each record and its folder before a commit returns.
    """

    def __init__(self, root: Path | str, *, checkpoint_every: int = CHECKPOINT_EVERY,
                 checkpoint_fraction: float = CHECKPOINT_FRACTION, durable: bool = True):
        self.root = Path(root)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_fraction = checkpoint_fraction
        self.durable = durable

    def record_path(self, seq: int) -> Path:
        return self.root / f"{seq:0{SEQ_DIGITS}d}.json"

    def checkpoint_path(self, seq: int) -> Path:
        return self.root / f"{seq:0{SEQ_DIGITS}d}.checkpoint.json"

    # -- reading --------------------------------------------------------------------------------
    def read_record(self, seq: int) -> dict[str, Any] | None:
        rec = _load(self.record_path(seq))
        if rec is not None and rec.get("seq") != seq:
            raise TornRecordError(self.record_path(seq), f"holds record {rec.get('seq')}, not {seq}")
        return rec

    def open(self) -> Snapshot:
        """The log's current state: the last good checkpoint, then every record after it.

        Raises:
            TornRecordError: a record after the checkpoint is torn or damaged.
        """
        return self._fold(self._checkpoint())

    def replay(self) -> Snapshot:
        """The state from every record, ignoring checkpoints (for checks and tests)."""
        return self._fold(Snapshot())

    def _fold(self, snap: Snapshot) -> Snapshot:
        while (rec := self.read_record(snap.seq + 1)) is not None:
            snap.apply(rec)
            snap.records_read += 1
        return snap

    def _checkpoint(self) -> Snapshot:
        """The last good checkpoint: the one ``_last_checkpoint`` names, else the newest that loads."""
        for seq in self._checkpoint_seqs():
            try:
                obj = _load(self.checkpoint_path(seq))
            except TornRecordError:
                continue
            if obj is not None and obj.get("seq") == seq:
                claim = Claim(**obj["claim"]) if obj.get("claim") else None
                return Snapshot(seq=seq, entries=obj["entries"], meta=obj["meta"], claim=claim,
                                claim_time=obj.get("claim_time", 0.0), checkpoint_seq=seq)
        return Snapshot()

    def _checkpoint_seqs(self) -> Iterator[int]:
        try:
            pointed = int(json.loads((self.root / LAST_CHECKPOINT).read_text())["seq"])
            yield pointed
        except (OSError, ValueError, KeyError, TypeError):
            pointed = None
        if self.root.is_dir():  # listed only when the pointer is missing or names a bad file
            found = (int(p.name.split(".")[0]) for p in self.root.glob("*.checkpoint.json"))
            yield from sorted((s for s in found if s != pointed), reverse=True)

    # -- writing --------------------------------------------------------------------------------
    def create_record(self, seq: int, claim: str, actions: list[dict[str, Any]]) -> dict[str, Any]:
        """Create record ``seq`` if no one has: the conditional create every commit goes through.

        Raises:
            SeqTakenError: record ``seq`` exists already.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        rec = {"seq": seq, "claim": claim, "time": time.time(), "actions": actions}
        data = _sealed(rec)
        final = self.record_path(seq)
        tmp = self._write_temporary(final, data)
        try:
            os.link(tmp, final)
        except FileExistsError:
            raise SeqTakenError(f"{final} exists") from None
        except OSError as e:
            if e.errno not in _NO_LINKS:
                raise
            self._create_excl(final, data)  # no hard links here: a crash can leave this torn
        finally:
            tmp.unlink(missing_ok=True)
        if self.durable:
            _fsync_dir(self.root)
        return {**rec, "sha256": _digest(rec)}

    def _create_excl(self, final: Path, data: bytes) -> None:
        try:
            fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            raise SeqTakenError(f"{final} exists") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if self.durable:
                fh.flush()
                os.fsync(fh.fileno())

    def write_checkpoint(self, snap: Snapshot) -> Path:
        """Write the state ``snap`` holds (after record ``snap.seq``) and point readers at it."""
        path = self.checkpoint_path(snap.seq)
        self._replace(path, _sealed(snap.state()))
        self._replace(self.root / LAST_CHECKPOINT, json.dumps({"seq": snap.seq}).encode())
        snap.checkpoint_seq, snap.records_read = snap.seq, 0
        return path

    def _replace(self, path: Path, data: bytes) -> None:
        tmp = self._write_temporary(path, data)
        os.replace(tmp, path)

    def _write_temporary(self, path: Path, data: bytes) -> Path:
        tmp = self.root / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            if self.durable:
                fh.flush()
                os.fsync(fh.fileno())
        return tmp

    def checkpoint_due(self, snap: Snapshot) -> bool:
        tail = snap.seq - snap.checkpoint_seq
        return tail >= max(self.checkpoint_every, self.checkpoint_fraction * len(snap.entries))

    def repair_torn_tail(self) -> Path | None:
        """Set a torn *last* record aside (as ``.NNN.json.torn``); return where it went, or None.

        A torn record followed by good ones is damage this does not guess about.

        Raises:
            TornRecordError: the torn record is not the last one.
        """
        snap = self._checkpoint()
        seq = snap.seq + 1
        while True:
            try:
                if self.read_record(seq) is None:
                    return None
            except TornRecordError:
                if self.record_path(seq + 1).exists():
                    raise
                aside = self.root / f".{self.record_path(seq).name}.torn"
                os.replace(self.record_path(seq), aside)
                return aside
            seq += 1

    def heartbeat_path(self, claim: Claim) -> Path:
        return self.root / f"_claim-{claim.id}.alive"

    def acquire(self, owner: str = "", *, takeover: bool = False, stale_after: float = 60.0) -> Writer:
        """Claim the log for one writer.

        Args:
            owner: what the writer is, shown to a writer that is refused.
            takeover: take over a claim whose holder has been silent for ``stale_after``
                seconds (a claim whose process is gone on this host is taken over anyway).
            stale_after: seconds of silence (no record, no heartbeat) after which a claim is stale.

        Raises:
            WriterConflictError: another writer holds the log (the message names it).
        """
        snap = self.open()
        holder, reason = snap.claim, None
        if holder is not None:
            alive = holder.alive()
            silent = time.time() - self._last_activity(snap, holder)
            if alive is False:
                reason = "its process is gone"
            elif takeover and silent >= stale_after:
                reason = f"taken over after {silent:.0f} s of silence"
            else:
                hint = (f"it was active {silent:.0f} s ago, less than the {stale_after:g} s after which a "
                        "claim may be taken over" if takeover else
                        "if that writer crashed, run again with --take-over to take over its claim")
                raise WriterConflictError(f"{self.root} is being written by {holder.describe()} "
                                          f"(last active {silent:.0f} s ago); {hint}")
        claim = Claim.new(owner)
        action = {"op": "claim", "claim": asdict(claim),
                  "takeover_of": holder.id if holder else None, "reason": reason}
        try:
            rec = self.create_record(snap.seq + 1, claim.id, [action])
        except SeqTakenError:
            now = self.open().claim
            raise WriterConflictError(f"{self.root} was claimed at the same moment by "
                                      f"{now.describe() if now else 'another writer'}") from None
        snap.apply(rec)
        return Writer(self, claim, snap)

    def _last_activity(self, snap: Snapshot, claim: Claim) -> float:
        try:
            beat = self.heartbeat_path(claim).stat().st_mtime
        except OSError:
            beat = 0.0
        return max(snap.claim_time, beat, claim.started)


class Writer:
    """The one writer of a log: commits go to the record after its own last one."""

    def __init__(self, log: CommitLog, claim: Claim, snapshot: Snapshot):
        self.log, self.claim, self.snapshot = log, claim, snapshot
        self.released = False

    @property
    def seq(self) -> int:
        return self.snapshot.seq

    def commit(self, actions: list[dict[str, Any]]) -> int:
        """Append one record holding ``actions``; return its sequence number.

        Raises:
            FencedError: another writer has written to the log since this one's last record.
        """
        if self.released:
            raise LogError(f"claim {self.claim.id} was released; acquire the log again")
        seq = self.seq + 1
        try:
            rec = self.log.create_record(seq, self.claim.id, actions)
        except SeqTakenError:
            raise FencedError(self._fenced_by(seq)) from None
        self.snapshot.apply(rec)
        if self.log.checkpoint_due(self.snapshot):
            self.log.write_checkpoint(self.snapshot)
        return seq

    def _fenced_by(self, seq: int) -> str:
        try:
            rec = self.log.read_record(seq)
        except TornRecordError as e:
            return f"record {seq} was written by someone else ({e}); claim {self.claim.id} stops"
        claims = [a["claim"] for a in (rec or {}).get("actions", []) if a["op"] == "claim"]
        by = Claim(**claims[0]).describe() if claims else f"claim {(rec or {}).get('claim')}"
        return (f"{self.log.root}: this writer (claim {self.claim.id}) was fenced off: record {seq} "
                f"was written by {by}; nothing more is committed by this writer")

    def heartbeat(self) -> None:
        """Say this writer is alive without a commit (for a writer that waits for input)."""
        path = self.log.heartbeat_path(self.claim)
        path.touch()
        os.utime(path)

    def release(self) -> None:
        """Give the log up; the next writer claims it without a takeover."""
        if not self.released:
            self.commit([{"op": "release", "claim": self.claim.id}])
            self.released = True
            self.log.heartbeat_path(self.claim).unlink(missing_ok=True)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.release()
        except FencedError:
            pass  # taken over: there is nothing of ours to release


def open_log(root: Path | str) -> Snapshot:
    """The state of the log at ``root``: its last checkpoint plus the records after it."""
    return CommitLog(root).open()
