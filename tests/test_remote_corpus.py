"""Corpora in object storage, against a real S3-protocol server (moto's server mode) that the
tests start on 127.0.0.1: listing a prefix, byte-range splits across objects equal to the same
files on disk, gzip / Parquet / .txt objects, a missing object, a refused access, and an object
replaced between planning and reading."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'moto[server]')")
s3fs = pytest.importorskip("s3fs", reason="s3fs is not installed (pip install s3fs)")

import embedlab  # noqa: E402
from embedlab.chunk_stream import make_chunker  # noqa: E402
from embedlab.config import CorpusConfig, EmbedConfig, EncodeConfig  # noqa: E402
from embedlab.corpus import CorpusError  # noqa: E402
from embedlab.files import EnvironmentFault  # noqa: E402
from embedlab.remote_read import UrlSplit  # noqa: E402
from embedlab.split_embed import plan  # noqa: E402
from embedlab.split_task import cut_split  # noqa: E402
from embedlab.store import Store  # noqa: E402

from .conftest import REPO, write_jsonl  # noqa: E402

SIM = "sim:r_max=50000,b_half=16,dim=32"
FAST = dict(model=SIM, progress=False)
SECRET = "s3cr3t-that-no-store-may-hold"  # moto takes any key until auth is switched on


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """``moto_server`` in its own process on a free loopback port, with a bucket ``bkt``."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/data.json", timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)
        self.options = {"endpoint_url": self.endpoint, "key": "AKIAEMBEDLABTEST0001", "secret": SECRET}
        self.fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **self.options)
        self.fs.mkdir("bkt")

    def auth(self, after: str) -> None:
        """Check credentials and IAM policies from now on ("0"), or never again ("inf")."""
        req = urllib.request.Request(self.endpoint + "/moto-api/reset-auth", data=after.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=5).close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3():
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


def put_parts(s3: S3Server, local: Path, prefix: str, parts: list[bytes], suffix: str = ".jsonl") -> None:
    """The same objects under ``s3://bkt/PREFIX/`` and files in ``local``."""
    local.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(parts):
        (local / f"part-{i}{suffix}").write_bytes(data)
        s3.fs.pipe(f"bkt/{prefix}/part-{i}{suffix}", data)


def store_bytes(out: Path) -> dict[int, tuple[bytes, bytes]]:
    """Each partition's Parquet file and FAISS shard, by partition index."""
    store = Store(out)
    assert store.verify() == []
    return {k: ((out / e.parquet).read_bytes(), (out / e.faiss).read_bytes())
            for k, e in store.manifest().partitions.items()}


def rejects(out: Path, prefix: str) -> list[tuple]:
    rows = [json.loads(x) for x in (out / "_rejects.jsonl").read_text().splitlines()]
    return [(r["file"].replace(prefix, ""), r["line"], r["doc_id"], r["reason"].replace(prefix, "")) for r in rows]


def test_a_prefix_of_jsonl_objects_embeds_as_the_same_files_on_disk(s3, tmp_path, scifact_docs):
    lines = [json.dumps(d).encode() + b"\n" for d in scifact_docs[:300]]
    lines.insert(150, b'{"_id": "broken", "text": \n')  # a bad line in the middle object
    lines.insert(260, json.dumps(scifact_docs[5]).encode() + b"\n")  # an id the first object holds
    parts = [b"".join(lines[i:i + 101]) for i in (0, 101, 202)]
    put_parts(s3, tmp_path / "corpus", "corpus", parts)
    opts = dict(format="jsonl", split_bytes=45_000, partition_tokens=12_000, **FAST)
    remote = embedlab.embed("s3://bkt/corpus/", tmp_path / "remote", storage_options=s3.options, **opts)
    local = embedlab.embed(tmp_path / "corpus", tmp_path / "local", **opts)
    assert remote.splits == local.splits >= 6  # byte ranges cut inside each object
    assert (remote.documents, remote.chunks, remote.rejected) == (local.documents, local.chunks, 2)
    assert store_bytes(remote.out) == store_bytes(local.out)  # same vectors, ids, text: byte for byte
    assert rejects(remote.out, "s3://bkt/corpus/") == rejects(local.out, str(tmp_path / "corpus") + "/")
    # a re-run plans the same splits from the listing and reads no text
    again = embedlab.embed("s3://bkt/corpus/", tmp_path / "remote", storage_options=s3.options, **opts)
    assert again.partitions_encoded == 0 and again.partitions_skipped == remote.partitions
    # an object replaced by one of the same size (another ETag) is planned anew
    s3.fs.pipe("bkt/corpus/part-2.jsonl", parts[2].replace(b"the", b"THE"))
    changed = embedlab.embed("s3://bkt/corpus/", tmp_path / "remote", storage_options=s3.options, **opts)
    assert 0 < changed.partitions_encoded < changed.partitions and Store(changed.out).verify() == []


def same_store(s3: S3Server, url: str, path: Path, out: Path, local_options: dict | None = None, **extra):
    """Embed ``url`` and the local ``path`` alike; their stores are the same bytes."""
    remote = embedlab.embed(url, out / "remote", storage_options=s3.options, **extra, **FAST)
    local = embedlab.embed(path, out / "local", **(local_options or {}), **extra, **FAST)
    assert (remote.splits, remote.documents, remote.chunks) == (local.splits, local.documents, local.chunks)
    assert store_bytes(remote.out) == store_bytes(local.out)
    return remote


def test_gzip_objects_and_a_limit_read_as_on_disk(s3, tmp_path, scifact_docs):
    blob = "".join(json.dumps(d) + "\n" for d in scifact_docs[:120]).encode()
    (tmp_path / "all.jsonl").write_bytes(blob)
    half = blob.index(b"\n", len(blob) // 2) + 1
    put_parts(s3, tmp_path / "gz", "gz", [gzip.compress(blob[:half]), gzip.compress(blob[half:])], suffix=".jsonl.gz")
    gz = same_store(s3, "s3://bkt/gz/", tmp_path / "gz", tmp_path / "gz-out", {"format": "jsonl"},
                    split_bytes=4000)
    assert gz.splits == 2 and gz.documents == 120  # one split per gzip object, whatever --split-bytes says
    # --limit: the driver's own stream, object after object
    limited = same_store(s3, "s3://bkt/gz/", tmp_path / "all.jsonl", tmp_path / "limit-out", limit=70)
    assert limited.splits == 0 and limited.documents == 70


def test_parquet_and_txt_objects_read_as_on_disk(s3, tmp_path, scifact_docs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = scifact_docs[:120]
    table = pa.table({k: [d[k] for d in docs] for k in ("_id", "title", "text")})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=25)
    s3.fs.put(str(tmp_path / "c.parquet"), "bkt/pq/c.parquet")
    parquet = same_store(s3, "s3://bkt/pq/c.parquet", tmp_path / "c.parquet", tmp_path / "pq-out", split_bytes=5000)
    assert parquet.splits == 5 and parquet.documents == 120  # runs of row groups
    for d in docs[:20]:
        (tmp_path / "txt" / d["_id"][:1]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "txt" / d["_id"][:1] / f"{d['_id']}.txt").write_text(d["text"])
        s3.fs.pipe(f"bkt/txt/{d['_id'][:1]}/{d['_id']}.txt", d["text"].encode())
    txt = same_store(s3, "s3://bkt/txt", tmp_path / "txt", tmp_path / "txt-out", split_bytes=6000)
    assert txt.splits == 5 and txt.documents == 20  # lists of objects; ids relative to the prefix


def test_a_missing_object_fails_in_one_line_naming_the_url(s3, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "AWS_ENDPOINT_URL": s3.endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for url in ("s3://bkt/nothing-here.jsonl", "s3://no-such-bucket/corpus/"):
        run = subprocess.run([sys.executable, "-m", "embedlab.cli", "embed", url, "--out", str(tmp_path / "out"),
                              "--model", SIM, "--no-progress"], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 1, run.stderr
        assert run.stderr.strip().splitlines() == [f"embedlab: error: corpus path does not exist: {url}"]
        assert not (tmp_path / "out").exists()


def test_a_refused_access_fails_in_one_line_naming_the_url(s3, tmp_path, scifact_docs):
    import boto3

    s3.fs.pipe("bkt/locked/corpus.jsonl", "".join(json.dumps(d) + "\n" for d in scifact_docs[:5]).encode())
    iam = boto3.client("iam", endpoint_url=s3.endpoint, aws_access_key_id="testing",
                       aws_secret_access_key="testing", region_name="us-east-1")
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="other-bucket-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": ["arn:aws:s3:::other/*"]}]}))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    url = "s3://bkt/locked/corpus.jsonl"
    cfg = EmbedConfig(corpus=CorpusConfig(path=url, storage_options=s3.options), out=tmp_path / "unused",
                      encode=EncodeConfig(model=SIM))
    works, _, _ = plan(cfg, make_chunker(cfg).chunk_tokens)  # planned while the server lets anyone in
    s3.auth("0")
    try:
        # refused on a worker: a fault naming the object (the store keeps what it has)
        denied = replace(works[0].corpus, storage_options={**s3.options, "key": key["AccessKeyId"],
                                                           "secret": key["SecretAccessKey"]})
        with pytest.raises(EnvironmentFault, match=f"^{url}: access denied"):
            list(UrlSplit(works[0].split, denied))
        for who in ({"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]},  # a policy that denies
                    {"key": "AKIAWRONGWRONGWRONG1", "secret": "wrong"}):  # a key the server does not know
            with pytest.raises(CorpusError) as e:
                embedlab.embed(url, tmp_path / "out", storage_options={**s3.options, **who}, **FAST)
            assert str(e.value).startswith(f"{url}: access denied (") and "credentials" in str(e.value)
            assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
        run = subprocess.run([sys.executable, "-m", "embedlab.cli", "embed", url, "--out", str(tmp_path / "out"),
                              "--model", SIM, "--no-progress", "--storage-option", f"endpoint_url={s3.endpoint}",
                              "--storage-option", "key=AKIAWRONGWRONGWRONG1", "--storage-option", "secret=x"],
                             env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1
        assert run.stderr.startswith(f"embedlab: error: {url}: access denied (")
    finally:
        s3.auth("inf")


def test_an_object_replaced_between_plan_and_read_is_refused(s3, tmp_path, scifact_docs):
    data = "".join(json.dumps(d) + "\n" for d in scifact_docs[:60]).encode()
    s3.fs.pipe("bkt/replaced/corpus.jsonl", data)
    cfg = EmbedConfig(corpus=CorpusConfig(path="s3://bkt/replaced/corpus.jsonl", split_bytes=len(data) // 3,
                                          storage_options=s3.options), out=tmp_path / "unused",
                      encode=EncodeConfig(model=SIM))
    works, _, _ = plan(cfg, make_chunker(cfg).chunk_tokens)
    assert len(works) >= 3 and all(w.split.version.startswith("ETag=") for w in works)
    assert sum(len(list(cut_split(w)[2])) for w in works) > 0  # as planned: read
    s3.fs.pipe("bkt/replaced/corpus.jsonl", data.replace(b"the", b"THE"))  # same size, another ETag
    with pytest.raises(EnvironmentFault, match="the object changed after the job planned it"):
        list(cut_split(works[1])[2])
    # replaced while a split is read: its check at the end refuses what it read
    works, _, _ = plan(cfg, make_chunker(cfg).chunk_tokens)
    records = iter(UrlSplit(works[0].split, works[0].corpus))
    next(records)
    s3.fs.pipe("bkt/replaced/corpus.jsonl", data)
    with pytest.raises(EnvironmentFault, match="s3://bkt/replaced/corpus.jsonl: the object (changed|was replaced)"):
        list(records)
    # and the whole job on a vanished object: one line, the store left resumable
    s3.fs.rm("bkt/replaced/corpus.jsonl")
    with pytest.raises(EnvironmentFault, match="no such object"):
        list(cut_split(works[0])[2])


def test_storage_options_parse_and_never_reach_the_store(s3, tmp_path, scifact_docs):
    from embedlab.remote import parse_storage_options

    assert parse_storage_options(["anon=true", "endpoint_url=http://h:1", "client_kwargs.region_name=eu-west-1",
                                  "config_kwargs.retries={\"max_attempts\": 2}"]) == {
        "anon": True, "endpoint_url": "http://h:1", "client_kwargs": {"region_name": "eu-west-1"},
        "config_kwargs": {"retries": {"max_attempts": 2}}}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_storage_options(["no-equals-sign"])
    corpus = write_jsonl(tmp_path / "c.jsonl", scifact_docs[:10])
    s3.fs.put(str(corpus), "bkt/secret/c.jsonl")
    result = embedlab.embed("s3://bkt/secret/c.jsonl", tmp_path / "out", storage_options=s3.options, **FAST)
    assert result.documents == 10
    for f in tmp_path.joinpath("out").rglob("*"):
        assert not f.is_file() or SECRET.encode() not in f.read_bytes(), f
