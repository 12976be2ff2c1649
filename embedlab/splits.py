"""Plan a corpus as splits without reading its text, and read each split on its own.

A *split* is the unit of input work: a byte range of a JSONL file, a run of row groups of a
Parquet file, a whole gzip file, or a list of ``.txt`` files. Planning looks at file sizes,
versions (modification time or ETag) and Parquet footers only, so the driver's cost per split is
constant however large the corpus, and the same files and settings always give the same splits
(and the same :attr:`Split.key`), whatever the cluster looks like. A worker then reads its own
split with :func:`read_split`.

JSONL byte ranges follow the rule of Hadoop's ``LineRecordReader`` and Dask's ``read_text``: a
line belongs to the split in whose ``[start, end)`` range its first byte lies. A split that does
not begin at byte 0 skips the partial line it begins in, and a split reads past its end to finish
its last line. So every line is read exactly once, whatever the split sizes, and no split is
read to plan another. Lines end at ``\\n``; a ``\\r`` before it stays with the line (the JSONL
parser drops it), and a last line without a line end is still a line.

Gzip cannot be cut without reading it, so a ``.gz`` file is one split: a big gzip corpus should
be many files, or Parquet. Paths are local paths or any fsspec URL (``s3://``, ``gs://``,
``memory://``, ...).

Record positions: a JSONL record's key is the byte offset of its line in the (decompressed) file,
a Parquet record's the 0-based row in its file, a ``.txt`` record's the index of the file in the
sorted listing. Keys order records as a sequential read would. Line numbers (for reports) follow
without reading anything twice: a split yields every line it owns, blank ones included, so the
line number of a record is 1 + the lines owned by the file's earlier splits + its index within
its split.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import fsspec

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
GZ_SUFFIXES = tuple(s + ".gz" for s in JSONL_SUFFIXES)
DEFAULT_SPLIT_BYTES = 64 << 20  # 64 MiB of JSONL, Parquet row groups or .txt files per split
_READ_BLOCK = 1 << 20
# File-info fields that name a file's version, strongest first (S3 / Azure, GCS, local / HTTP).
_VERSION_FIELDS = ("ETag", "etag", "generation", "md5Hash", "mtime", "LastModified",
                   "last_modified", "created")


class SplitError(ValueError):
    """The corpus cannot be planned (missing path, unknown format, unreadable Parquet footer)."""


@dataclass(frozen=True, kw_only=True)
class Split:
    """One unit of input work; small, picklable, and identified by what it covers.

    Attributes:
        kind: ``jsonl`` (a byte range), ``jsonl.gz`` (a whole gzip file), ``parquet`` (row
            groups ``start`` to ``end``, end excluded) or ``txt`` (the files in ``files``).
        url: the file (for ``txt``: the folder the document ids are relative to).
        size: the file's size in bytes (``txt``: the files' total).
        version: the file's modification time or ETag as its file system reports it.
        start, end: byte range (``jsonl``), row-group range (``parquet``), 0 and the file count
            (``txt``, ``jsonl.gz``: 0 and the compressed size).
        first_row: ``parquet``: the file row at which row group ``start`` begins.
        files: ``txt``: ``(path, size, version)`` of each file, in listing order.
        first_file: ``txt``: the index of ``files[0]`` in the corpus listing.
        settings: a digest of the reader and chunking settings the split is read with.
    """

    kind: str
    url: str
    size: int
    version: str
    start: int
    end: int
    first_row: int = 0
    files: tuple[tuple[str, int, str], ...] = ()
    first_file: int = 0
    settings: str = ""

    @property
    def key(self) -> str:
        """sha256 of everything the split's records depend on: a re-run plans the same keys."""
        ident = [self.kind, self.url, self.size, self.version, self.start, self.end, self.first_row,
                 [list(f) for f in self.files], self.first_file, self.settings]
        return hashlib.sha256(json.dumps(ident, separators=(",", ":")).encode()).hexdigest()

    @property
    def nbytes(self) -> int:
        """Bytes of input the split covers (compressed bytes for gzip; a planning estimate)."""
        if self.kind == "jsonl":
            return self.end - self.start
        return self.size


class RawRecord(NamedTuple):
    """One record as read, before parsing.

    ``data`` is the line's bytes with its line end (JSONL), a row as a dict (Parquet), or the
    file's bytes (txt). ``source`` is the file it came from.
    """

    key: int
    source: str
    data: Any


def settings_digest(settings: Mapping[str, Any] | None) -> str:
    """A short stable digest of reader/chunking settings (JSON-serializable values)."""
    if not settings:
        return ""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_version(info: Mapping[str, Any]) -> str:
    """The version a file system reports for a file: ETag, generation, md5 or modification time."""
    for name in _VERSION_FIELDS:
        value = info.get(name)
        if value not in (None, ""):
            return f"{name}={value}"
    return ""


def _kind_of(path: str) -> str | None:
    name = path.lower()
    if name.endswith(GZ_SUFFIXES):
        return "jsonl.gz"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".txt"):
        return "txt"
    return None


def _url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return fs.unstrip_protocol(path) if not _is_local(fs) else path


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def plan_splits(source: str, *, split_bytes: int = DEFAULT_SPLIT_BYTES,
                settings: Mapping[str, Any] | None = None,
                storage_options: Mapping[str, Any] | None = None) -> list[Split]:
    """The splits of the corpus at ``source``, in corpus order, planned from metadata alone.

    Args:
        source: a JSONL, JSONL.gz, Parquet or .txt file; a BEIR folder (``corpus.jsonl[.gz]``);
            a folder of .txt files; or a folder or glob of JSONL / JSONL.gz / Parquet files.
            A local path or an fsspec URL.
        split_bytes: target bytes per split (JSONL bytes, Parquet compressed row-group bytes,
            .txt file bytes). A single row group or .txt file larger than this is one split.
        settings: reader and chunking settings; their digest is part of every split's key.
        storage_options: passed to fsspec (credentials, endpoint).

    Raises:
        SplitError: nothing at ``source``, an unknown format, or an unreadable Parquet footer.
    """
    if split_bytes < 1:
        raise ValueError(f"split_bytes must be >= 1; got {split_bytes}")
    fs, path = fsspec.core.url_to_fs(source, **dict(storage_options or {}))
    digest = settings_digest(settings)
    if fs.isdir(path):
        files = _folder_files(fs, path)
        root = path
    elif any(ch in path for ch in "*?["):
        files = sorted(fs.glob(path))
        root = path.split("*")[0].rsplit("/", 1)[0]
    elif fs.isfile(path):
        files, root = [path], posixpath.dirname(path)
    else:
        raise SplitError(f"corpus path does not exist: {source}")
    kinds = {p: _kind_of(p) for p in files}
    unknown = [p for p, k in kinds.items() if k is None]
    if unknown or not files:
        raise SplitError(f"{source}: no corpus files found" if not files else
                         f"cannot tell the format of {unknown[0]} from its name "
                         "(.jsonl[.gz], .parquet or .txt)")
    if "txt" in kinds.values():
        if set(kinds.values()) != {"txt"}:
            raise SplitError(f"{source}: mixes .txt files with other formats")
        return _txt_splits(fs, root, files, split_bytes, digest)
    out: list[Split] = []
    for p in files:
        info = fs.info(p)
        common = dict(url=_url(fs, p), size=int(info["size"]), version=file_version(info), settings=digest)
        kind = kinds[p]
        if kind == "jsonl.gz":
            out.append(Split(kind=kind, start=0, end=int(info["size"]), **common))
        elif kind == "jsonl":
            size = int(info["size"])
            bounds = list(range(0, size, split_bytes)) + [size]
            out += [Split(kind=kind, start=a, end=b, **common) for a, b in zip(bounds, bounds[1:])]
            if size == 0:
                out.append(Split(kind=kind, start=0, end=0, **common))
        else:
            out += _parquet_splits(fs, p, split_bytes, common)
    return out


def _folder_files(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):  # a BEIR folder
        if fs.isfile(posixpath.join(path, name)):
            return [posixpath.join(path, name)]
    found = sorted(p for p in fs.find(path) if _kind_of(p) is not None
                   and not posixpath.basename(p).startswith((".", "_")))
    return found


def _parquet_splits(fs: fsspec.AbstractFileSystem, path: str, split_bytes: int,
                    common: dict[str, Any]) -> list[Split]:
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a broken footer
        raise SplitError(f"{path}: not a readable Parquet file: {e}") from e
    out, first, row, start, acc = [], 0, 0, 0, 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        nbytes = sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
        if g > start and acc + nbytes > split_bytes:
            out.append(Split(kind="parquet", start=start, end=g, first_row=first, **common))
            start, first, acc = g, row, 0
        acc += nbytes
        row += rg.num_rows
    out.append(Split(kind="parquet", start=start, end=meta.num_row_groups, first_row=first, **common))
    return out


def _txt_splits(fs: fsspec.AbstractFileSystem, root: str, files: list[str], split_bytes: int,
                digest: str) -> list[Split]:
    entries = []
    for p in files:
        info = fs.info(p)
        entries.append((_url(fs, p), int(info["size"]), file_version(info)))
    out: list[Split] = []
    group: list[tuple[str, int, str]] = []
    first = 0
    for i, e in enumerate(entries):
        if group and sum(s for _, s, _ in group) + e[1] > split_bytes:
            out.append(_txt_split(fs, root, group, first, digest))
            group, first = [], i
        group.append(e)
    out.append(_txt_split(fs, root, group, first, digest))
    return out


def _txt_split(fs: fsspec.AbstractFileSystem, root: str, group: list[tuple[str, int, str]],
               first: int, digest: str) -> Split:
    return Split(kind="txt", url=_url(fs, root), size=sum(s for _, s, _ in group), version="",
                 start=0, end=len(group), files=tuple(group), first_file=first, settings=digest)


# -- reading ---------------------------------------------------------------------------------
def read_split(split: Split, *, columns: list[str] | None = None, batch_rows: int = 1024,
               storage_options: Mapping[str, Any] | None = None) -> Iterator[RawRecord]:
    """Every record the split owns, in file order, each exactly once across a file's splits.

    Args:
        split: from :func:`plan_splits`.
        columns: Parquet columns to read (None: all).
        batch_rows: Parquet rows per record batch.
        storage_options: passed to fsspec.

    Raises:
        OSError: the file cannot be read (missing, permission, a damaged gzip stream).
    """
    opts = dict(storage_options or {})
    if split.kind == "txt":
        yield from _read_txt(split, opts)
        return
    fs, path = fsspec.core.url_to_fs(split.url, **opts)
    if split.kind == "parquet":
        yield from _read_parquet(fs, path, split, columns, batch_rows)
        return
    with (open(path, "rb") if _is_local(fs) else fs.open(path, "rb")) as raw:
        if split.kind == "jsonl.gz":
            with gzip.open(raw, "rb") as fh:
                yield from _lines(fh, split.url, 0)
        else:
            yield from jsonl_range(raw, split)


def _lines(fh: Any, source: str, pos: int, end: int | None = None) -> Iterator[RawRecord]:
    """Lines of ``fh`` from ``pos`` (a line start), stopping at the first line starting at or past ``end``."""
    while end is None or pos < end:
        line = fh.readline()
        if not line:
            return
        yield RawRecord(pos, source, line)
        pos += len(line)


def jsonl_range(raw: Any, split: Split) -> Iterator[RawRecord]:
    """The lines a ``jsonl`` split owns, read from ``raw`` (a seekable binary file)."""
    if split.start >= split.end:
        return
    fh = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw, _READ_BLOCK)
    pos = split.start
    if pos > 0:  # skip the rest of the line that byte start-1 lies in (Hadoop's rule)
        fh.seek(pos - 1)
        pos += len(fh.readline()) - 1
    else:
        fh.seek(0)
    if pos < split.end:
        yield from _lines(fh, split.url, pos, split.end)


def _read_parquet(fs: fsspec.AbstractFileSystem, path: str, split: Split,
                  columns: list[str] | None, batch_rows: int) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        row = split.first_row
        groups = list(range(split.start, split.end))
        if not groups:
            return
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns):
            for obj in batch.to_pylist():
                yield RawRecord(row, split.url, obj)
                row += 1


def _read_txt(split: Split, opts: dict[str, Any]) -> Iterator[RawRecord]:
    for i, (url, _, _) in enumerate(split.files):
        fs, path = fsspec.core.url_to_fs(url, **opts)
        with fs.open(path, "rb") as fh:
            yield RawRecord(split.first_file + i, url, fh.read())


def txt_doc_id(split: Split, record: RawRecord) -> str:
    """A .txt record's document id: its path relative to the split's folder."""
    _, root = fsspec.core.url_to_fs(split.url)
    _, path = fsspec.core.url_to_fs(record.source)
    return posixpath.relpath(path, root)
