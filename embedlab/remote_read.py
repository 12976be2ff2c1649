"""The records of a URL corpus (:mod:`embedlab.remote`), as the local readers give them.

:class:`UrlSplit` reads one split where a worker runs it: a JSONL byte range (the Hadoop line
rule of :func:`embedlab.splits.jsonl_range`, over ranged reads), a whole gzip object (one split
each: gzip cannot be cut without reading it), Parquet row groups (pyarrow over the open object,
so only the footer and the split's column chunks are fetched), or a list of ``.txt`` objects.
Records, rejects and line numbers are those the local readers give for the same bytes, so a
store embedded from object storage equals one embedded from a copy on disk.

:func:`plan_url` is the driver's side: the splits from the listing, the Parquet footer's columns
and each gzip object's first block checked before any cluster starts. :func:`url_records` reads
the whole corpus in order for the driver's own stream (``--limit``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from embedlab.config import CorpusConfig, CorpusFormat
from embedlab.corpus import (UTF8_BOM, CorpusError, Record, guarded, jsonl_records, parquet_columns,
                             parquet_records, read_jsonl_line, reader_config, require_first_line, txt_record)
from embedlab.lines import gzip_lines
from embedlab.remote import check_planned, filesystem, object_info, open_planned, planning, reading
from embedlab.splits import Split, SplitError, jsonl_range, plan_splits

WHOLE_FILES = 1 << 62  # split bytes that make every file one split (the driver's sequential read)


class UrlSplit:
    """The records of one split of a URL corpus, in order; after iteration ``lines`` holds the
    lines a JSONL byte range owns (None for other kinds: their line numbers are the file's own)."""

    def __init__(self, split: Split, cfg: CorpusConfig):
        self.split, self.cfg = split, cfg
        self.lines: int | None = None

    def __iter__(self) -> Iterator[Record]:
        split = self.split
        with reading(split.url):
            if split.kind == "txt":
                yield from self._txt()
                return
            fs, path = filesystem(split.url, self.cfg.storage_options)
            with open_planned(fs, path, split.url, split.size, split.version) as fh:
                if split.kind == "jsonl":
                    yield from self._jsonl_range(fh)
                elif split.kind == "jsonl.gz":
                    yield from jsonl_records(gzip_lines(fh, split.url), self.cfg, split.url)
                else:
                    yield from self._parquet(fh)
            check_planned(split.url, split.size, split.version, object_info(fs, path))

    def _jsonl_range(self, fh: Any) -> Iterator[Record]:
        split, line = self.split, 0
        for raw in jsonl_range(fh, split):
            line += 1
            # only the object's first line may begin with a byte-order mark
            at = line if split.start == 0 or line > 1 or not raw.data.startswith(UTF8_BOM) else 2
            rec = read_jsonl_line(raw.data, self.cfg, split.url, at)
            if rec is not None:
                yield rec if at == line else replace(rec, line=line)
        self.lines = line

    def _parquet(self, fh: Any) -> Iterator[Record]:
        import pyarrow.parquet as pq

        split = self.split
        try:
            pf = pq.ParquetFile(fh)
        except OSError:
            raise
        except Exception as e:  # pyarrow raises ArrowInvalid for a broken footer
            raise CorpusError(f"{split.url}: not a readable Parquet file: {e}") from e
        columns = parquet_columns(split.url, self.cfg, pf.schema_arrow.names)
        yield from parquet_records(pf, split.url, self.cfg, columns, range(split.start, split.end),
                                   split.first_row)

    def _txt(self) -> Iterator[Record]:
        split = self.split
        fs, root = filesystem(split.url, self.cfg.storage_options)
        for url, size, version in split.files:
            _, path = filesystem(url, self.cfg.storage_options)
            with open_planned(fs, path, url, size, version) as fh:
                raw = fh.read()
            doc_id = posixpath.relpath(path, root)
            yield guarded(lambda: txt_record(raw, url, doc_id), url, 0)


def plan_url(url: str, fmt: CorpusFormat, cfg: CorpusConfig, settings: Mapping[str, Any],
             split_bytes: int | None = None) -> list[Split]:
    """The splits of a URL corpus from its listing; a missing or refused object, a Parquet
    object without the id or text column, or a ``.gz`` object with no readable line fails here.

    Raises:
        CorpusError: one line naming the URL.
    """
    opts = cfg.storage_options
    try:
        with planning(url):
            filesystem(url, opts)[0].invalidate_cache()  # plan from the store's listing now, not a cached one
            splits = plan_splits(url, split_bytes=split_bytes or cfg.split_bytes, settings=settings,
                                 storage_options=opts)
            for s in splits:
                if s.kind == "jsonl.gz" and s.start == 0:
                    _gzip_head(s, opts)
            if fmt is CorpusFormat.PARQUET and splits:
                _parquet_footer(splits[0], cfg)
    except SplitError as e:
        raise CorpusError(str(e)) from None
    return splits


def _gzip_head(split: Split, opts: Mapping[str, Any]) -> None:
    fs, path = filesystem(split.url, opts)
    with fs.open(path, "rb", block_size=1 << 20, cache_type="none") as fh:  # one GET of the first block
        require_first_line(gzip_lines(fh, split.url))


def _parquet_footer(split: Split, cfg: CorpusConfig) -> None:
    import pyarrow.parquet as pq

    fs, path = filesystem(split.url, cfg.storage_options)
    with fs.open(path, "rb", block_size=1 << 20, cache_type="readahead") as fh:
        try:
            names = pq.read_schema(fh).names
        except OSError:
            raise
        except Exception as e:  # pyarrow raises ArrowInvalid for a broken footer
            raise CorpusError(f"{split.url}: not a readable Parquet file: {e}") from e
    parquet_columns(split.url, cfg, names)


def url_records(cfg: CorpusConfig) -> Iterator[Record]:
    """Every record of a URL corpus in order, each file read whole (the driver's stream)."""
    fmt, url, reader = reader_config(cfg)
    for split in plan_url(str(url), fmt, reader, {}, split_bytes=WHOLE_FILES):
        yield from UrlSplit(split, reader)
