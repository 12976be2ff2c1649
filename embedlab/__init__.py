"""embedlab: embed text corpora in bulk on Dask, and measure what the vectors cost and retrieve.

The Python API (embedlab/api.py): ``embed(corpus, out, **options)`` runs a job;
``open_store(out)`` opens its store to ``search``, ``evaluate``, ``to_arrow``, ``to_pandas`` and
``vectors``.
"""

from embedlab.openmp import prefer_sleeping_threads

prefer_sleeping_threads()  # before anything imports torch (see embedlab/openmp.py)

from embedlab.api import StoreReader, chunk, embed, open_store  # noqa: E402
from embedlab.embed_result import EmbedResult  # noqa: E402
from embedlab.store import Store  # noqa: E402

__all__ = ["EmbedResult", "Store", "StoreReader", "chunk", "embed", "open_store"]
__version__ = "0.1.0"
