"""Read a BEIR folder's queries and qrels, as BEIR's own loader does, reporting bad lines.

A split's queries are the distinct query ids its ``qrels/<split>.tsv`` names. Qrels files end
lines in CRLF; both line ends are accepted. A qrels line that names an unknown query or an
unknown document, or that does not parse, is reported with file, line and reason rather than
silently dropped.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

from embedlab.corpus import Reject

Qrels = dict[str, dict[str, int]]  # {query_id: {doc_id: grade}}
Run = dict[str, dict[str, float]]  # {query_id: {doc_id: score}}


class BeirError(ValueError):
    pass


@dataclass
class BeirSplit:
    name: str
    queries: dict[str, str]  # only the queries the split's qrels name
    qrels: Qrels
    problems: list[Reject] = field(default_factory=list)


def corpus_file(folder: Path) -> Path:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
    raise BeirError(f"{folder}: no corpus.jsonl or corpus.jsonl.gz")


def corpus_ids(folder: Path) -> set[str]:
    """Every document id of the folder's corpus (ids only; the text is not kept)."""
    path = corpus_file(folder)
    opener = gzip.open if path.name.endswith(".gz") else open
    ids = set()
    with opener(path, "rt", encoding="utf-8-sig") as fh:
        for line in fh:
            if line.strip():
                try:
                    ids.add(str(json.loads(line)["_id"]))
                except (json.JSONDecodeError, KeyError):
                    continue
    return ids


def load_split(folder: Path | str, split: str = "test", doc_ids: set[str] | None = None) -> BeirSplit:
    """Queries and qrels of ``split``. ``doc_ids``: the ids a qrels line may name (default: the corpus)."""
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    queries_path = folder / "queries.jsonl"
    for p in (qrels_path, queries_path):
        if not p.is_file():
            raise BeirError(f"{p}: missing; a BEIR folder needs queries.jsonl and qrels/{split}.tsv")
    all_queries: dict[str, str] = {}
    problems: list[Reject] = []
    with open(queries_path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                all_queries[str(obj["_id"])] = obj["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                problems.append(Reject(str(queries_path), lineno, None, f"bad query line: {e}"))
    if doc_ids is None:
        doc_ids = corpus_ids(folder)
    qrels: Qrels = {}
    with open(qrels_path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for lineno, row in enumerate(reader, start=1):
            if lineno == 1 and row and row[0] == "query-id":
                continue
            if not row or not "".join(row).strip():
                continue
            where = (str(qrels_path), lineno)
            if len(row) != 3:
                problems.append(Reject(*where, None, f"expected 3 tab-separated fields, got {len(row)}"))
                continue
            qid, did, grade = (x.strip() for x in row)
            try:
                g = int(grade)
            except ValueError:
                problems.append(Reject(*where, did, f"score {grade!r} is not an integer"))
                continue
            if qid not in all_queries:
                problems.append(Reject(*where, did, f"query id {qid!r} is not in queries.jsonl"))
                continue
            if did not in doc_ids:
                problems.append(Reject(*where, did, f"document id {did!r} is not in the corpus"))
                continue
            qrels.setdefault(qid, {})[did] = g
    return BeirSplit(split, {q: all_queries[q] for q in qrels}, qrels, problems)
