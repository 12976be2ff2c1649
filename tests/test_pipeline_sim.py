"""The embed job on the simulated device: the same worker path as a real encoder, GPU-class speed."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

import embedlab
from embedlab.config import ChunkConfig, CorpusConfig, EmbedConfig
from embedlab.corpus import read_corpus
from embedlab.chunk_stream import ChunkStream, make_chunker
from embedlab.simdevice import parse_sim_model, sim_vectors
from embedlab.store import Store

from .conftest import write_jsonl

SIM = "sim:r_max=20000,b_half=16,dim=48"


def test_embed_runs_on_the_simulated_device_with_its_vectors(tmp_path, scifact_docs):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", scifact_docs[:30])
    result = embedlab.embed(corpus, tmp_path / "out", model=SIM, partition_tokens=3000, progress=False)
    assert result.ok and result.documents == 30 and result.partitions >= 2
    assert result.encoder["device"] == "sim" and result.forward_seconds > 0
    store = Store(result.out)
    assert store.verify() == [] and store.meta()["dim"] == 48 and store.meta()["model"] == parse_sim_model(SIM).spec
    table = pq.read_table(result.out, columns=["chunk_id", "vector"])
    got = dict(zip(table.column("chunk_id").to_pylist(),
                   np.stack(table.column("vector").to_numpy(zero_copy_only=False))))
    cfg = EmbedConfig(corpus=CorpusConfig(path=corpus), out=tmp_path / "unused", chunk=ChunkConfig(),
                      encode=embedlab.config.EncodeConfig(model=SIM))
    chunks = list(ChunkStream(read_corpus(cfg.corpus), make_chunker(cfg), 64))
    want = sim_vectors([c.input_ids for c in chunks], parse_sim_model(SIM).dim)
    assert len(chunks) == len(got)
    assert np.array_equal(np.stack([got[c.chunk_id] for c in chunks]), want)
