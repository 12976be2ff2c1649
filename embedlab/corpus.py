"""Stream documents out of a corpus, one record at a time, never the whole file.

Every reader yields :class:`Document` for a good record and :class:`Reject` for a bad one
(with the file, the line and the reason), so a malformed line costs that line only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedlab.config import CorpusConfig, CorpusFormat, is_url
from embedlab.files import reporting
from embedlab.lines import Cut, NotCompressedError, check_unchanged, iter_lines
from embedlab.remote import resolve_url
from embedlab.splits import SplitError

UTF8_BOM = b"\xef\xbb\xbf"
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a str holds a paired surrogate as one code point
REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str  # the text that is chunked and encoded; char offsets refer to it
    source: str
    line: int  # 1-based line (JSONL), row (Parquet) or 0 (a whole .txt file)
    repaired: int = 0  # lone UTF-16 surrogates in the text replaced by U+FFFD


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


def resolve_format(cfg: CorpusConfig) -> tuple[CorpusFormat, Path | str]:
    """The concrete format and file (or folder) to read for ``cfg`` (a URL: from its listing)."""
    path = cfg.path
    if is_url(path):
        try:
            fmt, url = resolve_url(path, cfg.format.value, cfg.storage_options)
        except SplitError as e:
            raise CorpusError(str(e)) from None
        return CorpusFormat(fmt), url
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


def reader_config(cfg: CorpusConfig) -> tuple[CorpusFormat, Path | str, CorpusConfig]:
    """The format, the file or folder to read, and ``cfg`` with BEIR's field names filled in."""
    fmt, path = resolve_format(cfg)
    if fmt is CorpusFormat.BEIR:
        cfg = CorpusConfig(path=path, format=fmt, id_field="_id", text_field="text", title_field="title",
                           limit=cfg.limit, block_docs=cfg.block_docs, split_bytes=cfg.split_bytes,
                           storage_options=cfg.storage_options)
    return fmt, path, cfg


def read_corpus(cfg: CorpusConfig, records: Iterator[Record] | None = None) -> Iterator[Record]:
    """Yield every record of the corpus in file order, good and bad.

    Duplicate ids are rejected (the first one wins) and ``cfg.limit`` counts good documents.
    ``records``: the corpus's records as read elsewhere (a URL corpus:
    :func:`embedlab.remote_read.url_records`); None: read from the local path here.
    """
    if records is None:
        fmt, path, cfg = reader_config(cfg)
        if fmt in (CorpusFormat.BEIR, CorpusFormat.JSONL):
            records = read_jsonl(path, cfg)
        elif fmt is CorpusFormat.PARQUET:
            records = read_parquet(path, cfg)
        else:
            records = read_txt_files(txt_files(path), path if path.is_dir() else path.parent)
    seen: dict[str, str] = {}
    good = 0
    for rec in records:
        if isinstance(rec, Document):
            where = f"{rec.source}:{rec.line}"
            if rec.doc_id in seen:
                yield Reject(rec.source, rec.line, rec.doc_id,
                             f"duplicate document id {short(rec.doc_id)} (first seen at {seen[rec.doc_id]})")
                continue
            seen[rec.doc_id] = where
            good += 1
        yield rec
        if cfg.limit is not None and good >= cfg.limit:
            return


def normalize_doc_id(value: Any) -> str | None:
    """Ids may be strings or integers (``7`` and ``"7"`` are the same document).

    Anything else (floats, booleans, null, lists, objects, blank strings, strings holding a lone
    surrogate) is no id: the record is rejected rather than stored under a guessed key.
    """
    if isinstance(value, bytes):  # a Parquet binary column
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            return None
    if isinstance(value, str) and value.strip() and not LONE_SURROGATE.search(value):
        return value
    return None


def replace_lone_surrogates(text: str) -> tuple[str, int]:
    """``text`` with each lone UTF-16 surrogate replaced by U+FFFD, and how many there were.

    JSON may escape half of a surrogate pair (``"\\ud83d"``: an emoji cut by a tool that counts
    UTF-16 units); Python decodes it to a code point that no UTF-8 text can hold, which the
    tokenizer and Parquet refuse. It becomes U+FFFD, as a UTF-8 decoder does with a broken byte.
    """
    if text.isascii():
        return text, 0
    try:
        text.encode("utf-8")
        return text, 0
    except UnicodeEncodeError:
        return LONE_SURROGATE.subn(REPLACEMENT, text)


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for reasons that quote a bad value."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def record_from_json(obj: Any, cfg: CorpusConfig, source: str, line: int) -> Record:
    """One JSON object (a JSONL line or a Parquet row) as a document, or a reject saying what is wrong.

    Never raises: whatever fails while the record is read rejects that record only.
    """
    return guarded(lambda: _record(obj, cfg, source, line), source, line)


def require_first_line(lines: Iterator[tuple[int, bytes] | Cut]) -> None:
    """Read a gzip source's first line (its first block only), then close it; a source that is not
    gzip data raises :class:`CorpusError` (before any cluster starts)."""
    try:
        next(lines, None)
    except NotCompressedError as e:
        raise CorpusError(str(e)) from None
    finally:
        lines.close()


def guarded(build: Callable[[], Record], source: str, line: int) -> Record:
    """``build()``, or a :class:`Reject` of this record if it raises: one record, never the job."""
    try:
        return build()
    except Exception as e:  # noqa: BLE001 - the last line of defence, reported with the record
        return Reject(source, line, None, unreadable(e))


def unreadable(e: BaseException) -> str:
    return f"cannot be read: {type(e).__name__}: {str(e)[:200]}"


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8")  # UnicodeDecodeError: rejected by guarded()
    return value if isinstance(value, str) else None


def _record(obj: Any, cfg: CorpusConfig, source: str, line: int) -> Record:
    if not isinstance(obj, dict):
        return Reject(source, line, None, f"expected a JSON object, got {type(obj).__name__}")
    if cfg.id_field not in obj:
        return Reject(source, line, None, f"missing id field {cfg.id_field!r}")
    doc_id = normalize_doc_id(obj[cfg.id_field])
    if doc_id is None:
        return Reject(source, line, None,
                      f"id field {cfg.id_field!r} must be a non-empty string (valid Unicode) or an "
                      f"integer, got {type(obj[cfg.id_field]).__name__} {short(obj[cfg.id_field])}")
    if cfg.text_field not in obj or obj[cfg.text_field] is None:
        return Reject(source, line, doc_id, f"missing text field {cfg.text_field!r}")
    try:
        text = _text(obj[cfg.text_field])
    except UnicodeDecodeError as e:
        return Reject(source, line, doc_id,
                      f"text field {cfg.text_field!r} is not valid UTF-8 at byte {e.start}")
    if text is None:
        return Reject(source, line, doc_id, f"text field {cfg.text_field!r} must be a string, "
                      f"got {type(obj[cfg.text_field]).__name__}")
    title = obj.get(cfg.title_field) if cfg.title_field else None
    try:
        title = _text(title)
    except UnicodeDecodeError:
        title = None
    full, repaired = replace_lone_surrogates(join_title(title, text))
    if not full:
        return Reject(source, line, doc_id, "empty text")
    return Document(doc_id, full, source, line, repaired)


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
        obj = json.loads(text, strict=False, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        return Reject(source, line, None, f"invalid JSON at column {e.colno}: {e.msg}")
    except RecursionError:
        return Reject(source, line, None, "invalid JSON: nested too deeply to read")
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        return Reject(source, line, None, f"invalid JSON: {short(str(e), 200)}")
    if not isinstance(obj, dict):
        return Reject(source, line, None, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl_line(raw: bytes, cfg: CorpusConfig, source: str, line: int) -> Record | None:
    """One raw JSONL line as a document or a reject (None for a blank line); never raises."""
    def build() -> Record | None:
        obj = parse_jsonl_line(raw, source, line)
        return _record(obj, cfg, source, line) if isinstance(obj, dict) else obj

    return guarded(build, source, line)


def _parse_int(digits: str) -> int | str:
    """A JSON integer; one longer than Python converts (4,300 digits) stays its digits, so a
    huge numeric id is the same id as its decimal string, as ``7`` is ``"7"``."""
    try:
        return int(digits)
    except ValueError:
        return digits


def read_jsonl(path: Path, cfg: CorpusConfig) -> Iterator[Record]:
    yield from jsonl_records(iter_lines(path), cfg, str(path))


def jsonl_records(items: Iterator[tuple[int, bytes] | Cut], cfg: CorpusConfig, source: str) -> Iterator[Record]:
    """The records of numbered raw lines (:func:`embedlab.lines.iter_lines`), a cut as a reject."""
    try:
        for item in items:
            if isinstance(item, Cut):
                yield Reject(source, item.line, None, item.reason)
                continue
            rec = read_jsonl_line(item[1], cfg, source, item[0])
            if rec is not None:
                yield rec
    except NotCompressedError as e:
        raise CorpusError(str(e)) from None


def parquet_columns(path: Path | str, cfg: CorpusConfig, names: list[str] | None = None) -> list[str]:
    """The columns a Parquet corpus file is read with (its footer only; ``names``: its columns,
    when the footer is read already).

    Raises:
        CorpusError: the file is no readable Parquet file, or lacks the id or text column.
    """
    import pyarrow.parquet as pq

    if names is None:
        try:
            names = pq.read_schema(path).names
        except FileNotFoundError:
            raise
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a broken file
            raise CorpusError(f"{path}: not a readable Parquet file: {e}") from e
    names = set(names)
    for name in (cfg.id_field, cfg.text_field):
        if name not in names:
            raise CorpusError(f"{path}: no column {name!r}; columns are {sorted(names)}")
    columns = [cfg.id_field, cfg.text_field]
    if cfg.title_field and cfg.title_field in names and cfg.title_field not in columns:
        columns.append(cfg.title_field)
    return columns


def read_parquet(path: Path, cfg: CorpusConfig, groups: range | None = None,
                 first_row: int = 0) -> Iterator[Record]:
    """Rows in order; a row that cannot be converted, or a row group that cannot be read, is
    rejected (the row group as one reject naming its rows) and reading goes on.

    Args:
        groups: the row groups to read (a split's); None: all.
        first_row: the file row (0-based) at which ``groups`` begins, so rows keep their numbers.
    """
    import pyarrow.parquet as pq

    source = str(path)
    with reporting(path, "read the corpus file"):
        before = os.stat(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a broken file
        raise CorpusError(f"{source}: not a readable Parquet file: {e}") from e
    with pf:
        yield from parquet_records(pf, source, cfg, parquet_columns(path, cfg), groups, first_row)
    check_unchanged(path, before)


def parquet_records(pf: Any, source: str, cfg: CorpusConfig, columns: list[str], groups: range | None,
                    first_row: int) -> Iterator[Record]:
    """The rows of the row groups ``groups`` of an open ``pyarrow.parquet.ParquetFile``, in order
    (see :func:`read_parquet`)."""
    row = first_row
    n_groups = pf.num_row_groups
    for g in groups if groups is not None else range(n_groups):
        end = row + pf.metadata.row_group(g).num_rows
        try:
            for batch in pf.iter_batches(batch_size=cfg.block_docs, row_groups=[g], columns=columns):
                for obj in _batch_rows(batch):
                    row += 1
                    yield (Reject(source, row, None, unreadable(obj))
                           if isinstance(obj, Exception) else record_from_json(obj, cfg, source, row))
        except Exception as e:  # noqa: BLE001 - a damaged row group costs its rows only
            why = f"cannot be read: {short(str(e), 200)}"
        else:
            why = "are missing: the row group holds fewer rows than the file's footer says"
        if row < end:
            yield Reject(source, row + 1, None,
                         f"rows {row + 1}-{end} (row group {g + 1} of {n_groups}) {why}")
        row = max(row, end)


def _batch_rows(batch: Any) -> list[dict[str, Any] | Exception]:
    """The rows of an Arrow record batch as dicts; a row that fails to convert is its error."""
    try:
        return batch.to_pylist()
    except Exception:  # noqa: BLE001 - e.g. invalid UTF-8 in a string column: find the row
        out: list[dict[str, Any] | Exception] = []
        for i in range(batch.num_rows):
            try:
                out.append(batch.slice(i, 1).to_pylist()[0])
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out


def txt_files(path: Path) -> list[Path]:
    """The .txt files of a corpus folder in reading order (or the one file ``path``)."""
    return sorted(path.rglob("*.txt")) if path.is_dir() else [path]


def read_txt_files(files: list[Path], root: Path) -> Iterator[Record]:
    """One document per file; its id is its path relative to ``root``."""
    for f in files:
        source = str(f)
        doc_id = f.relative_to(root).as_posix()
        if f.is_dir():
            continue  # a folder named like a file: its own files are listed on their own
        if f.is_symlink() and not f.exists():  # a link to nothing (a file that vanished is a fault)
            yield Reject(source, 0, doc_id, "a link to a file that does not exist")
            continue
        if LONE_SURROGATE.search(doc_id):  # bytes of the name that are not UTF-8, as Python keeps them
            yield Reject(source, 0, None, f"the file name (the id) is not valid UTF-8: {short(doc_id)}")
            continue
        with reporting(f, "read the corpus file"):
            raw = f.read_bytes()
        yield guarded(lambda: txt_record(raw, source, doc_id), source, 0)


def txt_record(raw: bytes, source: str, doc_id: str) -> Record:
    if raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM):]
    if not raw:
        return Reject(source, 0, doc_id, "empty file (0 bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Reject(source, 0, doc_id, f"not valid UTF-8 at byte {e.start}")
    text = text.replace("\r\n", "\n").strip()
    if not text:
        return Reject(source, 0, doc_id, "empty text")
    return Document(doc_id, text, source, 0)
