"""Which files do raw Parquet readers list in a store folder in the middle of a commit?

    python scripts/check_raw_readers.py

Builds a folder with a store's names (from :class:`embedlab.store.Store`): a live partition, a
FAISS shard, a log record, the store's identity file, a hidden temporary, a file staged the way
a roll-forward commit stages it (``_staging/part-00001.g1.parquet.staged``) and, for comparison,
one staged under format 2's name (``_staging/part-00002.parquet``). Each Parquet file holds one
row naming itself. Then reads the folder with every reader installed (pyarrow.dataset, pandas,
Dask, DuckDB, Polars; the last two are not embedlab dependencies: ``pip install duckdb polars``
to check them) and prints what each lists. Exits 1 if a reader lists the roll-forward staged file.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from embedlab.commitlog import LOG_DIR
from embedlab.store import STORE_FILE, Store


def build(root: Path) -> None:
    store = Store(root)
    for path, tag in ((store.parquet_path(0), "live"), (store.staging.parquet_path(1, 1), "staged"),
                      (store.staging.root / "part-00002.parquet", "staged-format-2")):
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"chunk_id": [tag]}), path)
    for path, data in ((store.faiss_path(0), b"faiss"), (root / LOG_DIR / f"{1:020d}.json", b"{}"),
                       (root / STORE_FILE, b"{}"), (root / ".part-00003.parquet.a1b2.tmp", b"half")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def readers(root: Path) -> list[tuple[str, Callable[[], list[str]]]]:
    out: list[tuple[str, Callable[[], list[str]]]] = [
        ("pyarrow.dataset.dataset(OUT)", lambda: ds.dataset(root, format="parquet").to_table()["chunk_id"].to_pylist())]
    try:
        import pandas as pd

        out.append(("pandas.read_parquet(OUT)", lambda: pd.read_parquet(root)["chunk_id"].tolist()))
    except ImportError:
        pass
    try:
        import dask.dataframe as dd

        out.append(("dask.dataframe.read_parquet(OUT)",
                    lambda: dd.read_parquet(str(root)).compute()["chunk_id"].tolist()))
    except ImportError:
        pass
    try:
        import duckdb

        for pat in (str(root), f"{root}/*.parquet", f"{root}/**/*.parquet"):
            out.append((f"duckdb read_parquet('{pat.replace(str(root), 'OUT')}')",
                        lambda pat=pat: [r[0] for r in duckdb.sql(f"select chunk_id from read_parquet('{pat}')").fetchall()]))
    except ImportError:
        print("duckdb: not installed (pip install duckdb to check it)")
    try:
        import polars as pl

        for pat in (str(root), f"{root}/*.parquet", f"{root}/**/*.parquet"):
            out.append((f"polars scan_parquet('{pat.replace(str(root), 'OUT')}')",
                        lambda pat=pat: pl.scan_parquet(pat).collect()["chunk_id"].to_list()))
    except ImportError:
        print("polars: not installed (pip install polars to check it)")
    return out


def main() -> int:
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "OUT"
        build(root)
        print(f"{'reader':48s} rows listed")
        for name, read in readers(root):
            try:
                rows = sorted(read())
                bad += "staged" in rows
                print(f"{name:48s} {rows}")
            except Exception as e:  # a reader that refuses the folder lists nothing
                print(f"{name:48s} refuses the folder: {type(e).__name__}: {str(e).splitlines()[0][:70]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
