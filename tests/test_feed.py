"""The stream's feed reader: marks, committed positions, bounded read-ahead (no model needed)."""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

from embedlab.config import CorpusConfig
from embedlab.corpus import Reject
from embedlab.feed import FeedPosition, FileMark, Tail, append_rejects, kept_rejects, read_lines

READER = CorpusConfig(path=Path("."), id_field="_id", text_field="text", title_field=None)


def record(i: int, text: str = "some text") -> bytes:
    return (json.dumps({"_id": f"d{i}", "text": f"{text} {i}"}) + "\n").encode()


def drain(path: Path, start: dict[str, FileMark] | None = None, max_records: int | None = None,
          block: int = 64) -> tuple[Tail, list]:
    q: queue.Queue = queue.Queue()
    tail = Tail(path, READER, q, 0.001, max_records, start=start, block=block)
    tail.scan()
    return tail, [q.get_nowait() for _ in range(q.qsize())]


def test_marks_name_each_records_line_and_a_position_resumes_right_after_it(tmp_path):
    feed = tmp_path / "feed.jsonl"
    data = b"".join(record(i) for i in range(10)) + b"\n" + record(10, "x" * 500)  # a blank line, a long one
    feed.write_bytes(data + b'{"_id": "d11", "te')  # a partial last line waits
    tail, got = drain(feed)
    assert [a.record.doc_id for a in got] == [f"d{i}" for i in range(11)] and tail.count == 11
    assert [a.mark.line for a in got] == [*range(1, 11), 12]
    assert all(data[a.mark.start:a.mark.end] == record(i, "x" * 500 if i == 10 else "some text")
               for i, a in enumerate(got))
    position = FeedPosition.of(feed, {}).after([a.mark for a in got[:4]])
    assert position.records == 4 and position.files["feed.jsonl"].offset == got[3].mark.end
    meta = {position.key: json.loads(json.dumps(position.to_json()))}  # as the commit log keeps it
    again = FeedPosition.of(tmp_path / "." / "feed.jsonl", meta)  # any spelling of the same path
    assert again == position
    tail, rest = drain(feed, start=again.files)
    assert [a.record.doc_id for a in rest] == [f"d{i}" for i in range(4, 11)] and tail.rewound == []
    assert [a.mark.line for a in rest] == [*range(5, 11), 12]  # line numbers carry on
    assert FeedPosition.of(tmp_path / "other.jsonl", meta).files == {}  # another feed: its own position


def test_a_file_changed_under_its_position_is_read_again_from_the_start(tmp_path):
    feed = tmp_path / "in"
    feed.mkdir()
    (feed / "a.jsonl").write_bytes(b"".join(record(i) for i in range(6)))
    (feed / "b.jsonl").write_bytes(b"".join(record(i) for i in range(6, 9)))
    _, got = drain(feed)
    position = FeedPosition.of(feed, {}).after([a.mark for a in got])
    assert set(position.files) == {"a.jsonl", "b.jsonl"}
    (feed / "a.jsonl").write_bytes(b"".join(record(i, "rewritten") for i in range(6)))  # same size
    (feed / "b.jsonl").write_bytes(b"".join(record(i) for i in range(6, 10)))  # grown: one new record
    tail, rest = drain(feed, start=position.files)
    assert tail.rewound == ["a.jsonl"]
    assert [a.record.doc_id for a in rest] == [*(f"d{i}" for i in range(6)), "d9"]
    (feed / "b.jsonl").write_bytes(record(6))  # truncated below its position
    tail, rest = drain(feed, start=position.files)
    assert tail.rewound == ["a.jsonl", "b.jsonl"] and len(rest) == 7


def test_read_ahead_is_bounded_and_a_stop_releases_a_waiting_reader(tmp_path):
    feed = tmp_path / "feed.jsonl"
    feed.write_bytes(b"".join(record(i) for i in range(1000)))
    q: queue.Queue = queue.Queue(maxsize=8)
    tail = Tail(feed, READER, q, 0.001, None, block=256)
    tail.start()
    time.sleep(0.3)
    assert tail.count == 8 and q.full()  # it waits for the batch to take them
    taken = [q.get() for _ in range(5)]
    time.sleep(0.2)
    assert tail.count == 13 and [a.mark.line for a in taken] == [1, 2, 3, 4, 5]
    tail.stop()
    tail.join(timeout=5)
    assert not tail.is_alive() and tail.error is None


def test_read_lines_returns_whole_lines_only(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"a" * 100 + b"\nbb\ncc")
    with open(path, "rb") as fh:
        assert read_lines(fh, 0, 16) == b"a" * 100 + b"\nbb\n"  # a line longer than the block: whole
        assert read_lines(fh, 101, 2) == b"bb\n"
        assert read_lines(fh, 104, 16) == b""  # "cc" has no newline yet


def test_kept_rejects_are_those_of_committed_lines(tmp_path):
    feed = tmp_path / "feed.jsonl"
    feed.write_bytes(b"".join(record(i) for i in range(4)))
    _, got = drain(feed)
    position = FeedPosition.of(feed, {}).after([a.mark for a in got[:2]])  # lines 1-2 committed
    rejects = tmp_path / "_rejects.jsonl"
    append_rejects(rejects, [Reject(str(feed), 1, None, "bad"), Reject(str(feed), 3, None, "bad"),
                             Reject(str(tmp_path / "corpus.jsonl"), 1, None, "another job's")])
    with open(rejects, "ab") as fh:
        fh.write(b'{"file": "torn')
    assert kept_rejects(rejects, position, feed) == [Reject(str(feed), 1, None, "bad")]
    assert kept_rejects(rejects, FeedPosition.of(feed, {}), feed) == []
