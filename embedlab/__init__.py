"""embedlab: embed text corpora in bulk on Dask, and measure what the vectors cost and retrieve."""

from embedlab.api import embed
from embedlab.pipeline import EmbedResult
from embedlab.store import Store

__all__ = ["EmbedResult", "Store", "embed"]
__version__ = "0.1.0"
