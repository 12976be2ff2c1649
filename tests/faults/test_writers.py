"""The commit log's faults as a user meets them: a second writer, a stale claim, a torn record, a format-1 store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

import embedlab
from embedlab.claims import Claim
from embedlab.commitlog import LOG_DIR, CommitLog
from embedlab.search import Searcher
from embedlab.store import FORMAT_VERSION, Store

from ..conftest import claim_holder, write_jsonl

EMBEDLAB = [sys.executable, "-m", "embedlab.cli"]
FAST = dict(partition_tokens=1500, progress=False, dtype="fp32")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model, scifact_docs):
    root = tmp_path_factory.mktemp("writers")
    corpus = write_jsonl(root / "c.jsonl", scifact_docs[:30])
    return corpus, embedlab.embed(corpus, root / "store", model=str(tiny_model), **FAST)


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*EMBEDLAB, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def embed_cli(corpus, out, model, *extra: str) -> subprocess.CompletedProcess:
    return cli("embed", corpus, "--out", out, "--model", model, "--partition-tokens", "1500",
               "--dtype", "fp32", "--no-progress", "--json", *extra)


def records(out) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / LOG_DIR).glob("0*[0-9].json"))]


def test_commits_are_records_with_sizes_and_the_store_opens_by_size(built):
    corpus, result = built
    store = Store(result.out)
    assert store.format_version == FORMAT_VERSION == 3 and not (result.out / "_manifest.json").exists()
    recs = records(result.out)
    adds = [a for r in recs for a in r["actions"] if a["op"] == "add"]
    # group commit: never more records than partitions, plus one per split as it lands (its partition
    # count), claim, complete and release; a partition is added again only then (O(1) each)
    splits = len(list((result.out / "_splits").glob("*.json")))
    assert splits >= 1 and len(recs) <= result.partitions + splits + 3
    assert result.partitions <= len(adds) <= 2 * result.partitions
    m = store.manifest()
    assert sorted(store.log.sizes) == sorted(m.partitions) and m.complete
    for k, (pq_size, fs_size) in store.log.sizes.items():
        assert (result.out / m.partitions[k].parquet).stat().st_size == pq_size
        assert (result.out / m.partitions[k].faiss).stat().st_size == fs_size


def test_a_second_writer_is_refused_naming_the_first_and_a_dead_ones_claim_is_taken_over(
        built, tiny_model, tmp_path):
    corpus, result = built
    out = tmp_path / "out"
    shutil.copytree(result.out, out)
    with claim_holder(out) as first:
        second = embed_cli(corpus, out, tiny_model)
        assert second.returncode == 1, second.stderr
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith("embedlab: error:") and f"being written by pid {first.pid} on" in line
        assert "a test that holds the claim" in line and "--take-over" in line
        first.kill()  # SIGKILL: it never releases its claim
        first.wait(timeout=30)
    again = embed_cli(corpus, out, tiny_model)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["partitions_skipped"] == result.partitions
    takeovers = [a for r in records(out) for a in r["actions"] if a["op"] == "claim" and a["takeover_of"]]
    assert [a["reason"] for a in takeovers] == ["its process is gone"]
    assert Store(out).verify() == []


def test_a_claim_from_another_host_needs_take_over_after_it_went_silent(built, tiny_model, tmp_path,
                                                                         monkeypatch):
    corpus, result = built
    out = tmp_path / "out"
    shutil.copytree(result.out, out)
    log = CommitLog(out / LOG_DIR)
    other = Claim(id="0th3rh05t000", host="other-host", pid=4242, started=time.time() - 3600,
                  proc="another-boot-id/1/99", owner="embedlab embed (on the other host)")
    monkeypatch.setattr(time, "time", lambda: other.started)  # its last record, an hour ago
    log.create_record(log.open().seq + 1, other.id, [{"op": "claim", "claim": other.__dict__,
                                                      "takeover_of": None, "reason": None}])
    monkeypatch.undo()
    refused = embed_cli(corpus, out, tiny_model)
    assert refused.returncode == 1 and "pid 4242 on other-host" in refused.stderr
    assert "run again with --take-over" in refused.stderr
    taken = embed_cli(corpus, out, tiny_model, "--take-over")
    assert taken.returncode == 0, taken.stderr
    reasons = [a["reason"] for r in records(out) for a in r["actions"] if a["op"] == "claim"]
    assert reasons[-1].startswith("taken over after") and Store(out).verify() == []


def test_a_torn_last_record_is_named_to_readers_and_set_aside_by_the_next_writer(built, tiny_model,
                                                                                 tmp_path):
    corpus, result = built
    out = tmp_path / "out"
    shutil.copytree(result.out, out)
    log = CommitLog(out / LOG_DIR)
    torn = log.record_path(log.open().seq + 1)
    torn.write_bytes(b'{"seq": 9, "actions": [{"op": "add", "ke')  # a writer died mid-write (no links)
    check = cli("verify", out)
    assert check.returncode == 1 and f"{torn}: torn or damaged" in check.stdout
    again = embed_cli(corpus, out, tiny_model)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["partitions_skipped"] == result.partitions
    assert (torn.parent / f".{torn.name}.torn").is_file() and Store(out).verify() == []


def test_a_format_1_store_is_read_as_it_is_and_writers_name_migrate(built, tiny_model, tmp_path):
    corpus, result = built
    out = tmp_path / "v1"
    shutil.copytree(result.out, out)
    store = Store(out)
    manifest = store.manifest()  # turn it into the store an older embedlab wrote
    (out / "_manifest.json").write_text(json.dumps(manifest.to_json()))
    meta = json.loads((out / "_embedlab.json").read_text())
    (out / "_embedlab.json").write_text(json.dumps({**meta, "format_version": 1}))
    shutil.rmtree(out / LOG_DIR)
    assert Store(out).verify() == [] and Searcher(out).n_docs == 30  # readers: as it is
    refused = embed_cli(corpus, out, tiny_model)
    assert refused.returncode == 1 and f"`embedlab migrate {out}`" in refused.stderr
    done = cli("migrate", out)
    assert done.returncode == 0 and f"{len(manifest.partitions)} partitions" in done.stdout, done.stderr
    assert not (out / "_manifest.json").exists() and Store(out).manifest().to_json() == manifest.to_json()
    again = embed_cli(corpus, out, tiny_model)
    assert again.returncode == 0 and json.loads(again.stdout)["partitions_skipped"] == result.partitions
    assert Store(out).verify() == []
