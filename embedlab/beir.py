"""Read a BEIR folder's queries and qrels with BEIR's own protocol, reporting odd lines.

A split's queries are the distinct query ids its ``qrels/<split>.tsv`` names. Qrels files end
lines in CRLF; both line ends are accepted. Each odd qrels line is reported with file, line and
reason, and handled as BEIR and MTEB handle it:

* a line naming a document that is **not in the corpus** is *kept* (severity ``warning``):
  pytrec_eval counts it in the ideal DCG and in recall's denominator, and a query whose only
  relevant documents are missing still counts, scoring 0. Dropping such lines would drop those
  queries from the mean and report a higher figure than the published protocol;
* a line that **does not parse** (not 3 fields, a non-integer score) or that names a **query not
  in queries.jsonl** is *skipped* (severity ``skipped``): there is no grade to score, or no query
  text to search with, so neither BEIR nor embedlab can score it.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedlab.corpus import Reject

Qrels = dict[str, dict[str, int]]  # {query_id: {doc_id: grade}}
Run = dict[str, dict[str, float]]  # {query_id: {doc_id: score}}

KEPT = "warning"  # the line is reported and scored
SKIPPED = "skipped"  # the line is reported and not scored


class BeirError(ValueError):
    pass


@dataclass(frozen=True)
class QrelsProblem(Reject):
    """A reported qrels or queries line; ``severity`` says whether it is still scored."""

    severity: str = SKIPPED

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "severity": self.severity}


@dataclass
class BeirSplit:
    name: str
    queries: dict[str, str]  # only the queries the split's qrels name
    qrels: Qrels  # every parsable line of a known query, absent documents included (as BEIR)
    problems: list[QrelsProblem] = field(default_factory=list)
    absent: Qrels = field(default_factory=dict)  # the qrels lines whose document is not in the corpus

    def relevant(self) -> set[str]:
        """Every document the split grades relevant (score > 0), as pytrec_eval counts them."""
        return {d for docs in self.qrels.values() for d, g in docs.items() if g > 0}

    def queries_missing_documents(self) -> tuple[int, int]:
        """``(some, all)``: queries with at least one relevant document absent from the corpus, and
        those whose every relevant document is absent (they score 0 whatever the retrieval)."""
        some = every = 0
        for q, docs in self.qrels.items():
            rel = {d for d, g in docs.items() if g > 0}
            gone = {d for d, g in self.absent.get(q, {}).items() if g > 0}
            some += bool(gone)
            every += bool(rel) and rel <= gone
        return some, every

    def restricted_to(self, doc_ids: set[str]) -> BeirSplit:
        """Only the qrels lines whose document is in ``doc_ids``, and the queries left with one.

        Not BEIR's protocol: for scoring a store of part of a corpus against that part alone
        (``embedlab compress --subset``).
        """
        qrels = {q: {d: g for d, g in docs.items() if d in doc_ids} for q, docs in self.qrels.items()}
        qrels = {q: docs for q, docs in qrels.items() if docs}
        return BeirSplit(self.name, {q: self.queries[q] for q in qrels}, qrels, self.problems, self.absent)


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
    """Queries and qrels of ``split``. ``doc_ids``: the corpus's document ids (default: read them)."""
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    queries_path = folder / "queries.jsonl"
    for p in (qrels_path, queries_path):
        if not p.is_file():
            raise BeirError(f"{p}: missing; a BEIR folder needs queries.jsonl and qrels/{split}.tsv")
    all_queries: dict[str, str] = {}
    problems: list[QrelsProblem] = []
    with open(queries_path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                all_queries[str(obj["_id"])] = obj["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                problems.append(QrelsProblem(str(queries_path), lineno, None, f"bad query line: {e}"))
    if doc_ids is None:
        doc_ids = corpus_ids(folder)
    qrels: Qrels = {}
    absent: Qrels = {}
    with open(qrels_path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for lineno, row in enumerate(reader, start=1):
            if lineno == 1 and row and row[0] == "query-id":
                continue
            if not row or not "".join(row).strip():
                continue
            where = (str(qrels_path), lineno)
            if len(row) != 3:
                problems.append(QrelsProblem(*where, None, f"expected 3 tab-separated fields, got "
                                             f"{len(row)}"))
                continue
            qid, did, grade = (x.strip() for x in row)
            try:
                g = int(grade)
            except ValueError:
                problems.append(QrelsProblem(*where, did, f"score {grade!r} is not an integer"))
                continue
            if qid not in all_queries:
                problems.append(QrelsProblem(*where, did, f"query id {qid!r} is not in queries.jsonl"))
                continue
            if did not in doc_ids:
                problems.append(QrelsProblem(*where, did, f"document id {did!r} is not in the corpus; kept, "
                                             "as BEIR keeps it (the query can never retrieve it)", KEPT))
                absent.setdefault(qid, {})[did] = g
            qrels.setdefault(qid, {})[did] = g
    return BeirSplit(split, {q: all_queries[q] for q in qrels}, qrels, problems, absent)
