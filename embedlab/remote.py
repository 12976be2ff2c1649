"""Corpora where users keep them: any fsspec URL (``s3://``, ``gs://``, ``az://``, ``https://``).

The driver plans a URL corpus from the file system's listing and object metadata (size and ETag,
generation or modification time: :func:`embedlab.splits.file_version`), never from its text; the
version is part of each split's key, so a replaced object is planned anew. A worker opens the
object, checks that it is still the version the job planned (:func:`open_planned`), reads its own
byte range through a read-ahead block cache (a few ranged GETs per split, not the whole object),
and checks the version again when it is done. s3fs sends each ranged GET with ``If-Match`` on the
ETag it opened, so an object replaced while it is read fails that read rather than mixing two
versions.

Errors name the URL in one line: a missing object or prefix, a refused access (wrong or missing
credentials, a bucket policy), a file system fsspec cannot load (its package missing). At
planning time they are :class:`~embedlab.splits.SplitError` (the job fails before any cluster
starts); on a worker they are :class:`~embedlab.files.EnvironmentFault` (the store keeps what was
written and a re-run resumes).

Credentials and endpoints come from the file system's own environment variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``AZURE_STORAGE_CONNECTION_STRING``, fsspec's ``FSSPEC_S3_ENDPOINT_URL``, ...) on each machine,
and/or from storage options (``--storage-option KEY=VALUE``), which travel with every split task.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import fsspec

from embedlab.files import EnvironmentFault
from embedlab.splits import GZ_SUFFIXES, JSONL_SUFFIXES, SplitError, file_version

READ_BLOCK = 8 << 20  # bytes one ranged GET fetches ahead: a 16 MiB split costs ~3 requests
CREDENTIALS = ("check the credentials (the storage's environment variables: AWS_ACCESS_KEY_ID, "
               "AWS_PROFILE, ...; or --storage-option key=... secret=...) and the bucket's access policy")


def parse_storage_options(pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as fsspec storage options.

    A value that is JSON (``true``, ``3``, ``{"a": 1}``) is taken as that value, anything else as
    a string; a dotted key nests (``client_kwargs.region_name=eu-west-1``).

    Raises:
        ValueError: a pair without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--storage-option takes KEY=VALUE; got {pair!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        *parents, last = key.strip().split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ValueError(f"--storage-option {key}: {name} is already a value")
        node[last] = value
    return out


def filesystem(url: str, options: Mapping[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    """The file system and the path inside it for ``url``.

    Raises:
        SplitError: fsspec knows no such protocol, or the package that reads it is not installed.
    """
    try:
        return fsspec.core.url_to_fs(url, **dict(options))
    except ImportError as e:
        raise SplitError(f"{url}: cannot read this kind of URL here: {str(e).splitlines()[0]}") from None
    except (ValueError, TypeError) as e:
        raise SplitError(f"{url}: cannot open the file system: {e}") from None


def why(e: BaseException) -> str:
    """What went wrong reading an object, in words."""
    if isinstance(e, FileNotFoundError):
        return "no such object or prefix"
    if isinstance(e, PermissionError):
        return f"access denied ({_first_line(e)}); {CREDENTIALS}"
    if type(e).__name__ == "FileExpired":  # fsspec: the object changed between two ranged reads
        return "the object was replaced while it was read"
    return f"cannot read: {type(e).__name__}: {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


@contextlib.contextmanager
def planning(url: str) -> Iterator[None]:
    """Inside: a storage error while the driver plans becomes one :class:`SplitError` naming ``url``."""
    try:
        yield
    except SplitError:
        raise
    except OSError as e:
        raise SplitError(f"{url}: {why(e)}") from None


@contextlib.contextmanager
def reading(url: str) -> Iterator[None]:
    """Inside: a storage error on a worker becomes an :class:`EnvironmentFault` naming ``url``."""
    try:
        yield
    except EnvironmentFault:
        raise
    except SplitError as e:
        raise EnvironmentFault(url, str(e), True) from None
    except OSError as e:
        raise EnvironmentFault(url, why(e), True) from e


def object_info(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any]:
    """The object's metadata as the store reports it now (never from a cached listing)."""
    fs.invalidate_cache(path)
    return fs.info(path)


def check_planned(url: str, size: int, version: str, info: Mapping[str, Any]) -> None:
    """Raise unless ``info`` is the object the job planned: the same size and version.

    Raises:
        EnvironmentFault: the object was replaced (another ETag / modification time, or size).
    """
    now_size, now = int(info.get("size") or 0), file_version(info)
    if (now_size, now) != (size, version):
        raise EnvironmentFault(url, f"the object changed after the job planned it ({version}, {size:,} bytes "
                               f"then; {now}, {now_size:,} bytes now): a re-run plans it anew", True)


def open_planned(fs: fsspec.AbstractFileSystem, path: str, url: str, size: int, version: str) -> Any:
    """``path`` opened for reading through a read-ahead cache, once it is checked to be the
    version the job planned."""
    fs.invalidate_cache(path)
    fh = fs.open(path, "rb", block_size=READ_BLOCK, cache_type="readahead")
    try:
        details = getattr(fh, "details", None) or fs.info(path)
        check_planned(url, size, version, details)
    except BaseException:
        fh.close()
        raise
    return fh


def resolve_url(url: str, fmt: str, options: Mapping[str, Any]) -> tuple[str, str]:
    """The format (``beir``, ``jsonl``, ``parquet``, ``txt``) and the URL to plan for ``url``.

    ``fmt`` "auto" decides from the listing: a prefix holding ``corpus.jsonl[.gz]`` is BEIR, a
    prefix of ``.txt`` objects is txt, a prefix or glob of JSONL(.gz) or Parquet objects is
    that; an object by its name.

    Raises:
        SplitError: nothing at ``url``, access refused, or a format that cannot be told.
    """
    fs, path = filesystem(url, options)
    with planning(url):
        fs.invalidate_cache()
        if any(ch in path for ch in "*?["):
            names = sorted(fs.glob(path))
            if not names:
                raise SplitError(f"corpus path does not exist: {url} (no object matches)")
            return (_listing_format(url, names) if fmt == "auto" else fmt), url
        try:
            info = object_info(fs, path)
        except FileNotFoundError:
            raise SplitError(f"corpus path does not exist: {url}") from None
        if info.get("type") != "directory":
            return (_name_format(url) if fmt == "auto" else fmt), url
        for name in ("corpus.jsonl", "corpus.jsonl.gz"):  # a BEIR folder
            if fmt in ("auto", "beir") and fs.isfile(posixpath.join(path, name)):
                return "beir", url.rstrip("/") + "/" + name
        if fmt != "auto":
            return fmt, url
        names = [p for p in fs.find(path) if not posixpath.basename(p).startswith((".", "_"))]
        if not names:
            raise SplitError(f"{url}: no objects under this prefix")
        return _listing_format(url, names), url


def _name_format(name: str) -> str:
    low = name.lower()
    if low.endswith(JSONL_SUFFIXES + GZ_SUFFIXES):
        return "jsonl"
    if low.endswith(".parquet"):
        return "parquet"
    if low.endswith(".txt"):
        return "txt"
    raise SplitError(f"cannot tell the format of {name} from its name; pass a format (beir, jsonl, parquet, txt)")


def _listing_format(url: str, names: list[str]) -> str:
    kinds = set()
    for n in names:
        try:
            kinds.add(_name_format(n))
        except SplitError:
            continue
    if len(kinds) != 1:
        found = ", ".join(sorted(kinds)) if kinds else "no .jsonl[.gz], .parquet or .txt objects"
        raise SplitError(f"{url}: cannot tell the corpus format from the listing ({found}); "
                         "pass a format (jsonl, parquet, txt) or a narrower prefix or glob")
    return kinds.pop()
