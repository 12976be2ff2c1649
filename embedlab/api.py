"""The Python API, for notebooks and scripts: embed a corpus, then open the store to search,
evaluate, or read it as Arrow, pandas or numpy.

    import embedlab

    result = embedlab.embed("corpus.jsonl.gz", "runs/scifact", limit=500)
    print(result.summary())                      # names the corpus read, counts, timings
    store = embedlab.open_store("runs/scifact")
    for hit in store.search("what lowers blood pressure?", k=3):
        print(hit.rank, hit.score, hit.doc_id, hit.text[:80])
    scores = store.evaluate("../shared/data/scifact")   # EvalResult; .metrics, .to_json()
    df = store.to_pandas()                       # chunk_id, doc_id, ..., text, vector
    ids, vectors = store.vectors()               # chunk ids and an (n, dim) float32 array

A plain script works as written: no ``if __name__ == "__main__":`` guard is needed, because the
cluster's worker processes never re-run the script (``embedlab.cluster.main_script_hidden``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedlab.config import ChunkConfig, ClusterConfig, CorpusConfig, EmbedConfig, EncodeConfig
from embedlab.embed_result import EmbedResult
from embedlab.store import Store

if TYPE_CHECKING:
    import numpy as np

    from embedlab.evaluate import EvalResult
    from embedlab.search import Hit, Searcher

_GROUPS = {"corpus": CorpusConfig, "chunk": ChunkConfig, "encode": EncodeConfig, "cluster": ClusterConfig}
_ALIASES = {"corpus_format": "format"}  # the CLI's --format, under its Python keyword


def embed_config(corpus: str | Path, out: str | Path, **options: Any) -> EmbedConfig:
    """The :class:`EmbedConfig` for ``options``: each keyword is a field of one of the configs
    (``CorpusConfig``, ``ChunkConfig``, ``EncodeConfig``, ``ClusterConfig``, ``EmbedConfig``);
    every field not given keeps that config's own default.

    Raises:
        TypeError: a keyword that no config has (the message lists the ones there are).
        ValueError: a value a config refuses (``dtype="fp64"``, ``limit=0``, ...).
    """
    parts: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
    top: dict[str, Any] = {}
    own = {f.name for f in dataclasses.fields(EmbedConfig)} - set(_GROUPS) - {"out"}
    for key, value in options.items():
        key = _ALIASES.get(key, key)
        group = next((g for g, c in _GROUPS.items() if key in {f.name for f in dataclasses.fields(c)}
                      and key != "path"), None)
        if group is not None:
            parts[group][key] = value
        elif key in own:
            top[key] = value
        else:
            known = sorted(({f.name for c in _GROUPS.values() for f in dataclasses.fields(c)} | own)
                           - {"path"})
            raise TypeError(f"embed() got an unknown option {key!r}; options: {', '.join(known)}")
    return EmbedConfig(corpus=CorpusConfig(path=corpus, **parts["corpus"]), out=Path(out),
                       chunk=ChunkConfig(**parts["chunk"]), encode=EncodeConfig(**parts["encode"]),
                       cluster=ClusterConfig(**parts["cluster"]), **top)


def embed(corpus: Any, out: str | Path, **options: Any) -> EmbedResult:
    """Embed a corpus into a store folder (``embedlab embed CORPUS --out OUT``).

    Args:
        corpus: BEIR ``corpus.jsonl[.gz]``, JSONL, Parquet, a folder of ``.txt`` files, a BEIR folder,
            a chunk folder (``embedlab.chunk``), or a Dask DataFrame or Bag of chunks from the stage
            before (each partition a split; ``id_field`` and ``text_field`` name the chunk id and
            text, ``doc_field`` the document; ``long_chunks="split"`` or ``"refuse"``); a local path
            or an fsspec URL (``s3://bucket/prefix/``: see ``storage_options``).
        out: store folder; created, or resumed when it holds a store made with the same settings.
        **options: any config field, with that config's default when left out, e.g. ``limit``,
            ``format``, ``id_field``, ``text_field``, ``title_field``, ``chunk_tokens``, ``overlap``,
            ``truncate``, ``model``, ``dtype``, ``batch_size``, ``max_batch_tokens``, ``device``,
            ``compile``, ``workers``, ``threads``, ``scheduler``, ``split_bytes``, ``partition_tokens``,
            ``progress``, ``storage_options`` (fsspec options of a URL corpus: ``endpoint_url``,
            ``key``, ``secret``, ...).

    Returns:
        What the run did; ``result.summary()`` names the corpus and format read.

    Example:
        >>> r = embed("corpus.jsonl.gz", "out", limit=100)
        >>> r.chunks, r.ok
        (163, True)
    """
    from embedlab.split_embed import embed as run

    if hasattr(corpus, "to_delayed") and hasattr(corpus, "npartitions"):  # a Dask collection
        options.setdefault("format", "prechunked")
        return run(embed_config("dask-collection", out, **options), source=corpus)
    return run(embed_config(corpus, out, **options))


def chunk(corpus: str | Path, out: str | Path, **options: Any) -> Any:
    """Tokenize and chunk a corpus once into a chunk folder (``embedlab chunk CORPUS --out OUT``),
    which :func:`embed` reads without a tokenizer, with any model sharing the tokenizer.

    ``options`` as for :func:`embed` (``model`` names the tokenizer; ``partition_tokens`` is a row
    group's token budget). Returns a ``ChunkResult`` (``summary()``, ``to_json()``).
    """
    from embedlab.chunk_job import chunk_corpus

    return chunk_corpus(embed_config(corpus, out, **options))


def open_store(path: str | Path) -> StoreReader:
    """Open a store written by :func:`embed` (it must verify: no damaged or missing file)."""
    return StoreReader(path)


class StoreReader:
    """A verified store: search it, evaluate it, read its rows as Arrow, pandas or numpy.

    Rows that an ``update`` tombstoned are left out everywhere.
    """

    def __init__(self, path: str | Path):
        self.store = Store(path)
        self.store.require_verified()
        self._searcher: Searcher | None = None

    @property
    def path(self) -> Path:
        return self.store.root

    def searcher(self, query_prefix: str | None = None) -> Searcher:
        """The store's :class:`~embedlab.search.Searcher` (loads the query encoder once)."""
        from embedlab.search import Searcher

        if self._searcher is None or (query_prefix is not None and query_prefix != self._searcher.query_prefix):
            self._searcher = Searcher(self.store, query_prefix=query_prefix)
        return self._searcher

    def search(self, query: str, k: int = 10, *, documents: bool = False,
               query_prefix: str | None = None) -> list[Hit]:
        """The top ``k`` chunks (or documents, each scored by its best chunk) for ``query``.

        Each :class:`~embedlab.search.Hit` has ``rank``, ``score``, ``chunk_id``, ``doc_id`` and
        ``text`` (the chunk's text; for a document, its best chunk's).
        """
        if not query.strip():
            raise ValueError("the query is empty")
        if k < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        s = self.searcher(query_prefix)
        return (s.search_documents if documents else s.search)([query], k, text=True)[0]

    def evaluate(self, data: str | Path, **options: Any) -> EvalResult:
        """Score the store on a BEIR folder (``embedlab eval``): an ``EvalResult`` whose ``metrics``
        hold nDCG@10 and the rest, ``to_json()`` the JSON that ``eval --json`` prints.
        ``options``: ``split``, ``k``, ``query_prefix``, ``ignore_identical_ids``, ``write``."""
        from embedlab.evaluate import evaluate

        data = Path(data)
        if not data.is_dir():
            raise ValueError(f"data must be a BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/); "
                             f"{data} is not a folder")
        prefix = options.get("query_prefix")
        return evaluate(self.store, data, searcher=self.searcher(prefix), **options)

    def to_arrow(self, columns: list[str] | None = None) -> Any:
        """Every live row as one ``pyarrow.Table`` (columns: the store's, or those named)."""
        import pyarrow as pa

        return pa.concat_tables(list(self.store.iter_tables(columns=columns)))

    def to_pandas(self, columns: list[str] | None = None) -> Any:
        """Every live row as a ``pandas.DataFrame`` (``vector`` holds numpy arrays)."""
        return self.to_arrow(columns).to_pandas()

    def vectors(self) -> tuple[list[str], np.ndarray]:
        """Chunk ids and their vectors: ``(ids, x)`` with ``x`` of shape ``(n, dim)`` float32."""
        import numpy as np

        table = self.to_arrow(["chunk_id", "vector"])
        dim = table.schema.field("vector").type.list_size
        x = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim)
        return table.column("chunk_id").to_pylist(), np.ascontiguousarray(x, dtype=np.float32)
