from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# torch.compile costs a one-off ~6-25 s per process; tests exercise it where it matters
# (test_encoder.py) and run everything else eager, in-process and in the CLI subprocesses alike.
os.environ.setdefault("EMBEDLAB_COMPILE", "0")
DATA = Path(os.environ.get("EMBEDLAB_DATA", REPO.parent / "shared" / "data"))
SCIFACT = DATA / "scifact"


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    if not (SCIFACT / "corpus.jsonl.gz").is_file():
        pytest.skip(f"SciFact not found under {DATA} (set EMBEDLAB_DATA)")
    return SCIFACT


@pytest.fixture(scope="session")
def scifact_docs(scifact_dir) -> list[dict]:
    """The first 400 SciFact documents as dicts (real text for every test that needs some)."""
    docs = []
    with gzip.open(scifact_dir / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            docs.append(json.loads(line))
            if len(docs) == 400:
                break
    return docs


def write_jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture
def small_corpus(tmp_path, scifact_docs) -> Path:
    """40 SciFact documents as a BEIR corpus.jsonl."""
    return write_jsonl(tmp_path / "corpus.jsonl", scifact_docs[:40])


@pytest.fixture(scope="session")
def encoder():
    """The real all-MiniLM-L6-v2, loaded once for the whole test run."""
    from embedlab.config import EncodeConfig
    from embedlab.encoder import Encoder

    return Encoder(EncodeConfig(device="cpu", dtype="fp32"))


@pytest.fixture(scope="session")
def st_model(encoder):
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(encoder.info.path, device="cpu")


HOLD_CLAIM = """
import sys, time
from embedlab.store import Store
with Store(sys.argv[1]).claimed("a test that holds the claim"):
    print("held", flush=True)
    time.sleep(600)
"""


@contextlib.contextmanager
def claim_holder(out: Path):
    """A real second process holding ``out``'s writer claim until the block ends (then SIGKILLed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "held", proc.communicate()
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)
