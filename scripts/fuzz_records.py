"""Fuzz the record path for longer than CI can: the properties of tests/test_fuzz_records.py
(JSONL bytes, gzip cut or damaged, Parquet of any column type, the chunker), run with fresh
random cases until the time budget or case count is spent. Prints how many cases each property
tried and exits 1 at the first counterexample (Hypothesis prints it, shrunk).

    .venv/bin/python scripts/fuzz_records.py --minutes 10
    .venv/bin/python scripts/fuzz_records.py --cases 5000 --megaword 1048576
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROUND = 50  # cases per Hypothesis run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="time budget over all properties")
    ap.add_argument("--cases", type=int, default=1_000_000, help="most cases per property")
    ap.add_argument("--megaword", type=int, default=1 << 20, help="characters of the one-word text")
    ap.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: random)")
    args = ap.parse_args()
    os.environ["EMBEDLAB_FUZZ_MEGAWORD"] = str(args.megaword)
    sys.path.insert(0, str(REPO))

    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st

    from embedlab.chunking import Chunker
    from embedlab.encoder import describe_model, fast_tokenizer
    from tests.fuzzing import (check_chunks, check_gzip, check_jsonl, check_parquet, jsonl_files,
                               parquet_tables)

    chunker = Chunker(fast_tokenizer(describe_model("sentence-transformers/all-MiniLM-L6-v2").path),
                      chunk_tokens=32, overlap=4)
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-records-"))
    tried: dict[str, int] = {}
    budget = args.minutes * 60 / 3

    def jsonl(data: bytes) -> None:
        path = tmp / "corpus.jsonl"
        path.write_bytes(data)
        check_chunks(chunker, check_jsonl(path, data))

    def gz(data: bytes, cut: float, flip: int | None) -> None:
        check_gzip(tmp / "corpus.jsonl.gz", data, cut, flip)

    def parquet(table, flip: int | None) -> None:
        check_parquet(tmp / "corpus.parquet", *table, flip)

    properties = [
        ("jsonl bytes + chunker", jsonl, dict(data=jsonl_files())),
        ("gzip cut / damaged", gz, dict(data=jsonl_files(), cut=st.floats(0.05, 1.0),
                                        flip=st.one_of(st.none(), st.integers(0, 10**6)))),
        ("parquet types / damaged", parquet, dict(table=parquet_tables(),
                                                   flip=st.one_of(st.none(), st.integers(0, 10**6)))),
    ]
    rows = []
    for name, check, strategies in properties:
        tried[name] = 0

        def run(check=check, name=name, **kw) -> None:
            tried[name] += 1
            check(**kw)

        run.__signature__ = inspect.Signature([inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY)
                                               for k in strategies])
        t0 = time.monotonic()
        rounds = 0
        while time.monotonic() - t0 < budget and tried[name] < args.cases:
            # rounds of fresh random cases, so the time budget is kept (Hypothesis cannot be
            # stopped mid-run without reporting a failure)
            test = settings(max_examples=min(ROUND, args.cases - tried[name]), deadline=None,
                            database=None, suppress_health_check=list(HealthCheck))(given(**strategies)(run))
            if args.seed is not None:
                test = seed(args.seed + rounds)(test)
            rounds += 1
            try:
                test()
            except Exception:
                print(f"FAILED: {name} after {tried[name]:,} cases", file=sys.stderr)
                raise
        rows.append((name, tried[name], time.monotonic() - t0))
    print("| property | cases tried | seconds |\n| --- | ---: | ---: |")
    for name, n, secs in rows:
        print(f"| {name} | {n:,} | {secs:.0f} |")
    print(f"\n{sum(tried.values()):,} cases, no counterexample (megaword {args.megaword:,} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
