"""embedlab: embed text corpora in bulk on Dask, and measure what the vectors cost and retrieve.

The Python API (embedlab/api.py): ``embed(corpus, out, **options)`` runs a job;
``open_store(out)`` opens its store to ``search``, ``evaluate``, ``to_arrow``, ``to_pandas`` and
``vectors``.
"""

from embedlab.api import StoreReader, chunk, embed, open_store
from embedlab.embed_result import EmbedResult
from embedlab.store import Store

__all__ = ["EmbedResult", "Store", "StoreReader", "chunk", "embed", "open_store"]
__version__ = "0.1.0"
