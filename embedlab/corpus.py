"""Stream documents out of a corpus, one record at a time, never the whole file.

Every reader yields :class:`Document` for a good record and :class:`Reject` for a bad one
(with the file, the line and the reason), so a malformed line costs that line only.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedlab.config import CorpusConfig, CorpusFormat

UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str  # the text that is chunked and encoded; char offsets refer to it
    source: str
    line: int  # 1-based line (JSONL), row (Parquet) or 0 (a whole .txt file)


@dataclass(frozen=True)
class Reject:
    source: str
    line: int
    doc_id: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.source, "line": self.line, "doc_id": self.doc_id, "reason": self.reason}


Record = Document | Reject


class CorpusError(ValueError):
    """The corpus as a whole cannot be read (missing path, unknown format)."""


def resolve_format(cfg: CorpusConfig) -> tuple[CorpusFormat, Path]:
    """The concrete format and file (or folder) to read for ``cfg``."""
    path = cfg.path
    if not path.exists():
        raise CorpusError(f"corpus path does not exist: {path}")
    if cfg.format is not CorpusFormat.AUTO:
        return cfg.format, path
    if path.is_dir():
        for name in ("corpus.jsonl", "corpus.jsonl.gz"):
            if (path / name).is_file():
                return CorpusFormat.BEIR, path / name
        if any(path.rglob("*.txt")):
            return CorpusFormat.TXT, path
        raise CorpusError(f"{path} is a folder with neither corpus.jsonl[.gz] nor .txt files")
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        return CorpusFormat.JSONL, path
    if name.endswith(".parquet"):
        return CorpusFormat.PARQUET, path
    if name.endswith(".txt"):
        return CorpusFormat.TXT, path
    raise CorpusError(
        f"cannot tell the format of {path} from its name; pass a format (beir, jsonl, parquet, txt)"
    )


def join_title(title: Any, text: str) -> str:
    """The encoded text of a record, as BEIR and sentence-transformers build it."""
    if isinstance(title, str):
        return (title + " " + text).strip()
    return text.strip()


def read_corpus(cfg: CorpusConfig) -> Iterator[Record]:
    """Yield every record of the corpus in file order, good and bad.

    Duplicate ids are rejected (the first one wins) and ``cfg.limit`` counts good documents.
    """
    fmt, path = resolve_format(cfg)
    if fmt is CorpusFormat.BEIR:
        cfg = CorpusConfig(path=path, format=fmt, id_field="_id", text_field="text",
                           title_field="title", limit=cfg.limit, block_docs=cfg.block_docs)
        records = _read_jsonl(path, cfg)
    elif fmt is CorpusFormat.JSONL:
        records = _read_jsonl(path, cfg)
    elif fmt is CorpusFormat.PARQUET:
        records = _read_parquet(path, cfg)
    else:
        records = _read_txt(path)
    seen: dict[str, str] = {}
    good = 0
    for rec in records:
        if isinstance(rec, Document):
            where = f"{rec.source}:{rec.line}"
            if rec.doc_id in seen:
                yield Reject(rec.source, rec.line, rec.doc_id,
                             f"duplicate document id {rec.doc_id!r} (first seen at {seen[rec.doc_id]})")
                continue
            seen[rec.doc_id] = where
            good += 1
        yield rec
        if cfg.limit is not None and good >= cfg.limit:
            return


def _open_binary(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def normalize_doc_id(value: Any) -> str | None:
    """Ids may be strings or integers (``7`` and ``"7"`` are the same document)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def record_from_json(obj: Any, cfg: CorpusConfig, source: str, line: int) -> Record:
    """One JSON object (a JSONL line or a Parquet row) as a document, or a reject saying what is wrong."""
    if not isinstance(obj, dict):
        return Reject(source, line, None, f"expected a JSON object, got {type(obj).__name__}")
    if cfg.id_field not in obj:
        return Reject(source, line, None, f"missing id field {cfg.id_field!r}")
    doc_id = normalize_doc_id(obj[cfg.id_field])
    if doc_id is None:
        return Reject(source, line, None,
                      f"id field {cfg.id_field!r} must be a non-empty string or an integer, "
                      f"got {obj[cfg.id_field]!r}")
    if cfg.text_field not in obj or obj[cfg.text_field] is None:
        return Reject(source, line, doc_id, f"missing text field {cfg.text_field!r}")
    text = obj[cfg.text_field]
    if not isinstance(text, str):
        return Reject(source, line, doc_id,
                      f"text field {cfg.text_field!r} must be a string, got {type(text).__name__}")
    title = obj.get(cfg.title_field) if cfg.title_field else None
    full = join_title(title, text)
    if not full:
        return Reject(source, line, doc_id, "empty text")
    return Document(doc_id, full, source, line)


def parse_jsonl_line(raw: bytes, source: str, line: int) -> dict[str, Any] | Reject | None:
    """One JSONL line as a JSON object, a :class:`Reject` saying what is wrong, or None if blank.

    A UTF-8 byte-order mark on line 1 and the line end (LF or CRLF) are dropped; raw control
    characters inside strings are kept.
    """
    if line == 1 and raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM):]
    raw = raw.rstrip(b"\r\n")
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Reject(source, line, None, f"not valid UTF-8 at byte {e.start}: {raw[e.start:e.start + 4]!r}")
    try:
        obj = json.loads(text, strict=False)
    except json.JSONDecodeError as e:
        return Reject(source, line, None, f"invalid JSON at column {e.colno}: {e.msg}")
    if not isinstance(obj, dict):
        return Reject(source, line, None, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _read_jsonl(path: Path, cfg: CorpusConfig) -> Iterator[Record]:
    source = str(path)
    try:
        fh = _open_binary(path)
        with fh:
            for lineno, raw in enumerate(fh, start=1):
                obj = parse_jsonl_line(raw, source, lineno)
                if isinstance(obj, dict):
                    yield record_from_json(obj, cfg, source, lineno)
                elif obj is not None:
                    yield obj
    except (gzip.BadGzipFile, EOFError, OSError) as e:
        raise CorpusError(f"{source}: cannot read the file: {e}") from e


def _read_parquet(path: Path, cfg: CorpusConfig) -> Iterator[Record]:
    import pyarrow.parquet as pq

    source = str(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a broken file
        raise CorpusError(f"{source}: not a readable Parquet file: {e}") from e
    names = set(pf.schema_arrow.names)
    for name in (cfg.id_field, cfg.text_field):
        if name not in names:
            raise CorpusError(f"{source}: no column {name!r}; columns are {sorted(names)}")
    columns = [cfg.id_field, cfg.text_field]
    if cfg.title_field and cfg.title_field in names:
        columns.append(cfg.title_field)
    row = 0
    for batch in pf.iter_batches(batch_size=cfg.block_docs, columns=columns):
        for obj in batch.to_pylist():
            row += 1
            yield record_from_json(obj, cfg, source, row)


def _read_txt(path: Path) -> Iterator[Record]:
    root = path if path.is_dir() else path.parent
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    for f in files:
        source = str(f)
        doc_id = f.relative_to(root).as_posix()
        raw = f.read_bytes()
        if raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM):]
        if not raw:
            yield Reject(source, 0, doc_id, "empty file (0 bytes)")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield Reject(source, 0, doc_id, f"not valid UTF-8 at byte {e.start}")
            continue
        text = text.replace("\r\n", "\n").strip()
        if not text:
            yield Reject(source, 0, doc_id, "empty text")
            continue
        yield Document(doc_id, text, source, 0)
