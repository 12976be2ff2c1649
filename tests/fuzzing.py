"""Property-based fuzzing of the record path: strategies, an oracle and the properties.

Shared by ``tests/test_fuzz_records.py`` (a bounded run in CI) and ``scripts/fuzz_records.py``
(a long run that reports how many cases it tried). The oracle states the documented contract
of a JSONL line independently of the reader (decode strictly, parse, id a non-blank string or an
integer, text a string, lone surrogates -> U+FFFD, first id wins); the properties are:

* reading never raises, and yields exactly one record per non-blank line (or Parquet row), in
  order, with the file and line;
* each line is a document exactly when the oracle says so, with the oracle's id and text;
  every other line is a reject with a reason;
* chunking never raises: each document is cut into windows 0..n-1 that lie inside its text and
  fit the token budget, or is rejected with a reason; no document is chunked twice.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from embedlab.chunking import Chunker
from embedlab.config import CorpusConfig
from embedlab.corpus import CorpusError, Document, Reject, read_corpus

SPECIAL = ["\x00", "\ud800", "\udfff", "\ud83d", "\u0301", "\u0308", "\u202e", "\u200f", "\u061c",
           "\ufeff", "\r", "\n", "\r\n", "\u2028", "\x1b", "\x7f", "\U0001F600", "\u05e9\u05dc\u05d5\u05dd",
           "\u0645\u0631\u062d\u0628\u0627", "\ufffd", "\\", '"', "#", " ", "\t"]
# One word of this many characters is among the texts: 64 KiB in CI (the tokenizer reads about
# 1 MB/s of it); scripts/fuzz_records.py sets 1 MiB. tests/test_hostile_records.py has a 3 MB one.
MEGAWORD = "x" * int(os.environ.get("EMBEDLAB_FUZZ_MEGAWORD", 1 << 16))



def hostile_text(max_size: int) -> st.SearchStrategy[str]:
    """Any Unicode (surrogates included) mixed with the pieces that break text pipelines."""
    return st.lists(st.one_of(st.characters(), st.sampled_from(SPECIAL)), max_size=max_size).map("".join)


texts = st.one_of(hostile_text(40), st.just(MEGAWORD),
                  st.builds(lambda a, b: f"{a} {MEGAWORD[:5000]} {b}", hostile_text(5), hostile_text(5)))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | hostile_text(10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text(5), inner, max_size=3),
    max_leaves=8)
ids = st.one_of(hostile_text(8), st.integers(), st.integers(min_value=10**30, max_value=10**40),
                json_values)
FIELDS = ("_id", "title", "text")


@st.composite
def records(draw) -> Any:
    """A JSON value for one line: mostly objects with hostile or good fields, sometimes not."""
    kind = draw(st.sampled_from(["good", "good", "fields", "value"]))
    if kind == "value":
        return draw(json_values)
    if kind == "good":
        obj = {"_id": draw(st.one_of(st.uuids().map(str), st.integers(0, 10**15), hostile_text(6))),
               "text": draw(texts) + " word " + draw(hostile_text(10))}
        if draw(st.booleans()):
            obj["title"] = draw(st.one_of(texts, json_values))
    else:
        obj = {}
        for name in FIELDS:
            if draw(st.booleans()):
                obj[name] = draw(ids if name == "_id" else st.one_of(texts, json_values))
    for key in draw(st.lists(hostile_text(4), max_size=2)):
        obj[key] = draw(json_values)
    return obj


def dump(value: Any, ascii_only: bool) -> bytes:
    """One JSONL line; lone surrogates become ``\\udXXX`` escapes, or invalid UTF-8 bytes."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def jsonl_files(draw) -> bytes:
    """A JSONL file: lines of :func:`records`, blank lines, CRLF, a BOM, byte-level corruption."""
    lines = [dump(v, draw(st.booleans())) for v in draw(st.lists(records(), min_size=1, max_size=12))]
    lines += draw(st.lists(st.sampled_from([b"", b"   ", b"\r"]), max_size=2))
    data = b"\n".join(draw(st.permutations(lines))) + draw(st.sampled_from([b"\n", b"", b"\r\n"]))
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return draw(corrupted(data))


@st.composite
def corrupted(draw, data: bytes) -> bytes:
    """``data`` with a few byte-level mutations: flips, insertions, deletions, a truncation."""
    if not data or not draw(st.booleans()):
        return data
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip":
            out[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del out[at:at + draw(st.integers(1, 8))]
        else:
            del out[at:]
    return bytes(out)


# -- hand-written hostile lines -----------------------------------------------------------------
# (raw JSONL line, expected: doc id when it is a document / a reason fragment when it is a reject)
HOSTILE_JSONL = [
    (b'{"_id": "surrogate", "text": "lone \\ud800 surrogate"}', ("doc", "surrogate")),
    (b'{"_id": "pair", "title": "t \\udfff", "text": "a pair \\ud83d\\ude00 is fine"}', ("doc", "pair")),
    (b'{"_id": "id\\ud800", "text": "an id with a lone surrogate"}', ("reject", "id field")),
    (b'{"_id": ' + b"9" * 5000 + b', "text": "a 5,000-digit integer id"}', ("doc", "9" * 5000)),
    (b'{"_id": 123456789012345678901234567890, "text": "a big integer id"}',
     ("doc", "123456789012345678901234567890")),
    (b'{"_id": 1.5, "text": "float id"}', ("reject", "got float 1.5")),
    (b'{"_id": 1e999, "text": "infinite id"}', ("reject", "got float inf")),
    (b'{"_id": NaN, "text": "NaN id"}', ("reject", "got float nan")),
    (b'{"_id": true, "text": "bool id"}', ("reject", "got bool")),
    (b'{"_id": {"a": [1]}, "text": "nested id"}', ("reject", "got dict")),
    (b'{"_id": [], "text": "list id"}', ("reject", "got list")),
    (b'{"_id": "", "text": "empty id"}', ("reject", "id field")),
    (b'{"_id": null, "text": null}', ("reject", "id field")),
    (b'{"_id": "text-list", "text": ["a", "b"]}', ("reject", "must be a string, got list")),
    (b'{"_id": "text-num", "text": 5}', ("reject", "must be a string, got int")),
    (b'{"_id": "text-obj", "text": {"x": "y"}}', ("reject", "must be a string, got dict")),
    (b'{"_id": "text-null", "text": null, "title": null}', ("reject", "missing text field")),
    (b'{"_id": "title-num", "title": 7, "text": "a numeric title is ignored"}', ("doc", "title-num")),
    (b"[" * 100_000, ("reject", "nested too deeply")),
    (b'{"_id": "deep", "text": "x", "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     ("reject", "nested too deeply")),
    (b'{"_id": "nul", "text": "escaped \\u0000 and raw \x00 NUL"}', ("doc", "nul")),
    (b'{"_id": "bad-utf8", "text": "bytes \xff\xfe inside a string"}', ("reject", "not valid UTF-8")),
    (b'{"_id": "cesu", "text": "an encoded surrogate \xed\xa0\x80"}', ("reject", "not valid UTF-8")),
    (b'{"_id": "megaword", "text": "' + b"x" * 3_000_000 + b'"}', ("doc", "megaword")),
    (b'{"_id": "rtl", "text": "\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d \xe2\x80\xae override \xe2\x80\xac"}',
     ("doc", "rtl")),
    (b'{"_id": "combining", "text": "e' + "\u0301".encode() * 20_000 + b' and words"}', ("doc", "combining")),
    (b'"just a string"', ("reject", "expected a JSON object, got str")),
    (b"null", ("reject", "expected a JSON object, got NoneType")),
    (b'{"_id": "x", "text": "unterminated', ("reject", "invalid JSON")),
    (b'{"_id": "ok", "text": "a plain good record"}', ("doc", "ok")),
]


# -- the oracle: what the README promises for one line -----------------------------------------
SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Expected:
    line: int
    doc_id: str | None  # None: a reject
    text: str | None = None


def oracle_id(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip() and not SURROGATE.search(value):
        return value
    return None


def oracle(data: bytes) -> list[Expected]:
    """The expected outcome of each non-blank line of a JSONL file, first id winning."""
    out: list[Expected] = []
    seen: set[str] = set()
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    for n, raw in enumerate(pieces, start=1):
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            continue
        out.append(_expect(raw, n, seen))
    return out


def _expect(raw: bytes, n: int, seen: set[str]) -> Expected:
    try:
        obj = json.loads(raw.decode("utf-8"), strict=False)
    except (ValueError, RecursionError):
        return Expected(n, None)
    if not isinstance(obj, dict) or oracle_id(obj.get("_id")) is None:
        return Expected(n, None)
    text, title = obj.get("text"), obj.get("title")
    if not isinstance(text, str):
        return Expected(n, None)
    full = SURROGATE.sub("\ufffd", ((title + " " + text) if isinstance(title, str) else text).strip())
    doc_id = oracle_id(obj["_id"])
    if not full or doc_id in seen:
        return Expected(n, None)
    seen.add(doc_id)
    return Expected(n, doc_id, full)


# -- the properties ----------------------------------------------------------------------------
def read_all(path: Path, **kw: Any) -> list[Document | Reject]:
    return list(read_corpus(CorpusConfig(path=path, **kw)))


def check_jsonl(path: Path, data: bytes) -> list[Document]:
    """Reading ``data`` (already written at ``path``) gives the oracle's outcome line by line."""
    got = read_all(path)
    want = oracle(data)
    assert [r.line for r in got] == [e.line for e in want], "one record per non-blank line, in order"
    for rec, exp in zip(got, want):
        assert rec.source == str(path)
        if exp.doc_id is None:
            assert isinstance(rec, Reject) and rec.reason, (exp, rec)
        else:
            assert isinstance(rec, Document), (exp, rec)
            assert (rec.doc_id, rec.text) == (exp.doc_id, exp.text)
    return [r for r in got if isinstance(r, Document)]


def check_gzip(path: Path, data: bytes, cut: float, flip: int | None) -> None:
    """A gzip file cut at fraction ``cut`` (and maybe a byte flipped) never raises anything but a
    CorpusError (no line readable at all); cut cleanly, every line before the cut has exactly the
    plain file's outcome, and the cut itself is a reject naming the last good line."""
    packed = bytearray(gzip.compress(data, mtime=0))
    if flip is not None:
        packed[10 + flip % max(1, len(packed) - 10)] ^= 0xA5
    path.write_bytes(bytes(packed[:max(10, int(len(packed) * cut))]))
    try:
        got = read_all(path)
    except CorpusError as e:
        assert "cannot read the file" in str(e)
        return
    for rec in got:
        assert rec.source == str(path) and (isinstance(rec, Document) or rec.reason)
    if flip is not None:
        return
    cuts = [r for r in got if isinstance(r, Reject) and "truncated" in r.reason]
    end = cuts[0].line if cuts else 1 << 60
    assert len(cuts) <= 1 and (not cuts or got[-1] is cuts[0])
    if cuts:
        assert f"the last good line is {end - 1}" in cuts[0].reason
    want = [e for e in oracle(data) if e.line < end]
    before = [r for r in got if r.line < end]
    assert [r.line for r in before] == [e.line for e in want]
    for rec, exp in zip(before, want):
        assert (rec.doc_id, getattr(rec, "text", None)) == (exp.doc_id, exp.text) if exp.doc_id else \
            isinstance(rec, Reject)


def check_chunks(chunker: Chunker, docs: list[Document]) -> set[str]:
    """Every document chunked exactly once into in-bounds windows, or rejected; returns the ids."""
    chunks, rejects = chunker.chunk(docs)
    by_doc: dict[str, list] = {}
    for c in chunks:
        by_doc.setdefault(c.doc_id, []).append(c)
    refused = {r.doc_id for r in rejects}
    assert all(r.reason for r in rejects)
    assert not refused & by_doc.keys()
    assert refused | by_doc.keys() == {d.doc_id for d in docs}
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    for d in docs:
        if d.doc_id in refused:
            assert not re.search(r"[A-Za-z0-9]", d.text), f"a text with a word was rejected: {d.doc_id!r}"
            continue
        cs = by_doc[d.doc_id]
        assert [c.chunk_index for c in cs] == list(range(len(cs)))
        for c in cs:
            assert 0 <= c.char_start < c.char_end <= len(d.text) and c.text == d.text[c.char_start:c.char_end]
            assert c.n_tokens <= chunker.chunk_tokens
    return set(by_doc)


PARQUET_TYPES = {
    "string": (lambda pa: pa.string(), st.one_of(st.none(), hostile_text(12))),
    "large_string": (lambda pa: pa.large_string(), st.one_of(st.none(), hostile_text(12))),
    "binary": (lambda pa: pa.binary(), st.one_of(st.none(), st.binary(max_size=12))),
    "int64": (lambda pa: pa.int64(), st.one_of(st.none(), st.integers(-2**63, 2**63 - 1))),
    "float64": (lambda pa: pa.float64(), st.one_of(st.none(), st.floats())),
    "bool": (lambda pa: pa.bool_(), st.one_of(st.none(), st.booleans())),
    "list": (lambda pa: pa.list_(pa.string()),
             st.one_of(st.none(), st.lists(st.text(max_size=3), max_size=2))),
}


@st.composite
def parquet_tables(draw) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Column types for ``_id``, ``text`` and ``title`` and the rows (nulls included)."""
    types = {name: draw(st.sampled_from(sorted(PARQUET_TYPES))) for name in FIELDS}
    n = draw(st.integers(1, 10))
    rows = [{name: draw(PARQUET_TYPES[types[name]][1]) for name in FIELDS} for _ in range(n)]
    return types, rows


def surrogate_free(value: Any) -> Any:
    return value.encode("utf-8", "replace").decode() if isinstance(value, str) else value


def check_parquet(path: Path, types: dict[str, str], rows: list[dict[str, Any]], flip: int | None) -> None:
    """Each row is a document exactly when the oracle says so; a damaged file never raises
    anything but a CorpusError (footer unreadable), and accounts for every row it can."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{k: surrogate_free(v) for k, v in r.items()} for r in rows]  # Arrow strings are UTF-8
    table = pa.table({name: pa.array([r[name] for r in rows], PARQUET_TYPES[types[name]][0](pa))
                      for name in FIELDS})
    pq.write_table(table, path, row_group_size=4)
    if flip is not None:
        data = bytearray(path.read_bytes())
        data[flip % len(data)] ^= 0x5A
        path.write_bytes(bytes(data))
    try:
        got = read_all(path)
    except CorpusError:
        assert flip is not None
        return
    covered: list[int] = []
    for rec in got:
        assert rec.source == str(path) and (isinstance(rec, Document) or rec.reason)
        span = re.match(r"rows (\d+)-(\d+) ", getattr(rec, "reason", ""))
        covered += range(int(span[1]), int(span[2]) + 1) if span else [rec.line]
    # every row once, in order: those the footer counts (a damaged footer may count others)
    assert covered == list(range(1, len(covered) + 1)), "every row is a document or a reject, once"
    assert flip is not None or len(covered) == len(rows)
    if flip is None:
        seen: set[str] = set()
        for rec, row in zip(got, rows):
            doc_id, title, text = (_utf8(row[name]) for name in FIELDS)
            doc_id = oracle_id(doc_id)
            full = ""
            if isinstance(text, str):
                full = ((title + " " + text) if isinstance(title, str) else text).strip()
            good = doc_id is not None and bool(full) and doc_id not in seen
            if good:
                seen.add(doc_id)
            assert isinstance(rec, Document) == good, (row, rec)


def _utf8(value: Any) -> Any:
    """A binary cell as the reader sees it: its UTF-8 text, or None when it is not UTF-8."""
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None
