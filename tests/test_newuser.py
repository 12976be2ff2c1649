"""What a new user does on the first day, run as they would run it (issue 18, issue 14 item 4).

Each test runs the command or a plain Python file in a subprocess and checks the exit code, the
first line of the message and the output fields.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, write_jsonl

EMBEDLAB = [sys.executable, "-m", "embedlab.cli"]
SWEEP_CPU = REPO / "benchmarks" / "results" / "sweep_cpu.json"


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*EMBEDLAB, *args], capture_output=True, text=True, timeout=timeout)


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


@pytest.fixture(scope="module")
def made(tmp_path_factory, scifact_docs):
    """A 12-document store made by `embed --chunk-tokens 64` alone (the overlap follows the window)."""
    root = tmp_path_factory.mktemp("newuser")
    corpus = write_jsonl(root / "corpus.jsonl", scifact_docs[:12])
    out = root / "store"
    p = run("embed", str(corpus), "--out", str(out), "--chunk-tokens", "64", "--no-progress", "--json")
    assert p.returncode == 0, p.stderr
    return corpus, out, json.loads(p.stdout)


def test_readme_python_example_runs_as_a_plain_script(tmp_path, scifact_docs):
    """Item 1: the README's three lines in a file, no `if __name__ == "__main__":`, run with python."""
    corpus = write_jsonl(tmp_path / "corpus.jsonl", scifact_docs[:5])
    script = tmp_path / "example.py"
    script.write_text(textwrap.dedent(f"""\
        import embedlab
        result = embedlab.embed({str(corpus)!r}, "runs/example", limit=5, progress=False)
        print(result.summary())
        """))
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert first_line(p.stdout) == f"corpus      {corpus} (jsonl)"
    assert "bootstrapping" not in p.stderr and "documents   5" in p.stdout
    again = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and "no cluster started" in again.stdout  # item 7: nothing to redo


def test_a_failed_start_leaves_no_half_made_store(tmp_path, scifact_docs):
    """Item 1: the workers cannot load the encoder (no such CUDA device): the new store is removed."""
    import embedlab

    corpus = write_jsonl(tmp_path / "corpus.jsonl", scifact_docs[:3])
    out = tmp_path / "never"
    with pytest.raises(Exception):
        embedlab.embed(corpus, out, device="cuda:99", progress=False)
    assert not out.exists()


def test_search_results_carry_their_text(made):
    """Item 2: `search --json` has the text of each chunk; `Searcher.search` too; the Python API."""
    import embedlab
    from embedlab.search import Searcher

    _, out, _ = made
    p = run("search", str(out), "cell death", "-k", "3", "--json")
    assert p.returncode == 0, p.stderr
    results = json.loads(p.stdout)["results"]
    assert len(results) == 3 and all(set(r) == {"rank", "score", "chunk_id", "doc_id", "text"} for r in results)
    texts = embedlab.open_store(out).to_pandas().set_index("chunk_id")["text"]
    assert all(r["text"] == texts[r["chunk_id"]] for r in results)
    hits = Searcher(out).search(["cell death"], 3)[0]
    assert [h.text for h in hits] == [r["text"] for r in results]
    docs = embedlab.open_store(out).search("cell death", k=2, documents=True)
    assert len(docs) == 2 and all(h.text == texts[h.chunk_id] for h in docs)
    ids, x = embedlab.open_store(out).vectors()
    assert x.shape == (len(texts), 384) and sorted(ids) == sorted(texts.index)


def test_a_query_with_a_lone_surrogate_is_searched_as_with_u_fffd(made):
    """A query holding half of a surrogate pair (a cut emoji) is searched, not a traceback."""
    from embedlab.search import Searcher

    _, out, _ = made
    searcher = Searcher(out)
    cut, repaired = searcher.search(["cell death \ud83d"], 3)[0], searcher.search(["cell death \ufffd"], 3)[0]
    assert [h.chunk_id for h in cut] == [h.chunk_id for h in repaired] and len(cut) == 3


@pytest.mark.parametrize("args, code, message", [
    (["embed", "x.jsonl", "--dtype", "fp64"], 2, "embedlab: error: dtype must be one of"),
    (["embed", "x.jsonl", "--limit", "0"], 2, "Usage: embedlab embed"),
    (["embed", "x.jsonl", "--overlap", "40", "--chunk-tokens", "64"], 2, "embedlab: error: overlap (40)"),
    (["search", "/nope", "q"], 1, "embedlab: error: no store at /nope"),
    (["eval", "STORE", "--data", "CORPUS_FILE"], 2, "embedlab: error: --data must be a BEIR folder"),
])
def test_exit_codes_and_advice(args, code, message, scifact_dir, made):
    """Item 3: bad usage exits 2; wrong paths get the right advice, in one line, before anything starts."""
    args = [str(scifact_dir / "corpus.jsonl.gz") if a == "CORPUS_FILE" else str(made[1]) if a == "STORE" else a
            for a in args]
    p = run(*args, timeout=60)
    assert p.returncode == code, p.stderr
    assert first_line(p.stderr).startswith(message) and "Traceback" not in p.stderr
    if "--data" in args:
        assert f"did you mean {scifact_dir}?" in p.stderr


@pytest.mark.parametrize("args", [
    ["search", "STORE", "q", "-k", "0"], ["search", "STORE", "   "], ["eval", "STORE", "--data", ".", "--k", "0"],
    ["embed", "x.jsonl", "--batch-size", "0"], ["embed", "x.jsonl", "--partition-tokens", "0"],
    ["embed", "x.jsonl", "--chunk-tokens", "4"], ["embed", "x.jsonl", "--overlap", "-1"],
    ["embed", "x.jsonl", "--max-batch-tokens", "-1"], ["embed", "x.jsonl", "--workers", "0"],
    ["compress", "STORE", "--k", "0"], ["compress", "STORE", "--int8-percentile", "120"],
    ["stream", "--watch", ".", "--out", "o", "--max-batch", "0"], ["update", "x", "--out", "o", "--batch-size", "0"],
    ["sweep", "--repeats", "0"], ["plan", "--docs", "1e6", "--rate", "800", "--stream-batch", "0"],
    ["plan", "--docs", "1e6", "--rate", "0"],
])
def test_every_number_is_validated(args, made):
    """Issue 14 item 4: -k, batch sizes, token budgets, partition sizes, thresholds and an empty query."""
    _, out, _ = made
    p = run(*[str(out) if a == "STORE" else a for a in args], timeout=60)
    assert p.returncode == 2, (args, p.stderr)
    assert "Traceback" not in p.stderr and ("Invalid value" in p.stderr or "embedlab: error:" in p.stderr)


def test_summary_names_the_corpus(made):
    """Item 4: the JSON and the text summary name the corpus path and format."""
    corpus, out, summary = made
    assert summary["corpus"] == str(corpus) and summary["corpus_format"] == "jsonl"
    p = run("embed", str(corpus), "--out", str(out), "--chunk-tokens", "64", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert first_line(p.stdout) == f"corpus      {corpus} (jsonl)"


def test_plan_names_each_sections_rate():
    """Item 5: --rate with a curve: each section says which rate it uses, and a warning says they differ."""
    p = run("plan", "--docs", "1e9", "--chunks-per-doc", "6", "--rate", "800", "--price", "1.10",
            "--deadline", "2h", "--rmax", "900", "--bhalf", "96", "--max-batch", "2048", "--growth", "0.005")
    assert p.returncode == 0, p.stderr
    assert "800.0 chunks/s per GPU  (from --rate)" in p.stdout
    assert re.search(r"^deadline .*rate from r\(b\) with r_max=900, b_half=96$", p.stdout, re.M)
    assert "(rates from r(b) with r_max=900, b_half=96)" in p.stdout
    assert first_line(p.stderr).startswith("embedlab: warning: the sizing table uses --rate 800")


def test_plan_from_a_cpu_sweep_names_the_device_and_warns_outside_the_range():
    """Item 5: a CPU sweep's workers are CPU workers, and a batch past the measured ones is flagged."""
    p = run("plan", "--docs", "1e6", "--chunks-per-doc", "2", "--from-sweep", str(SWEEP_CPU),
            "--growth", "0.01", "--stream-batch", "512", "--json")
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    assert plan["worker"] == "CPU worker" and "cpu" in plan["device"]
    assert plan["measured_batches"] == [1, 128]
    assert any("batch 512 outside the batches the sweep measured (1-128)" in w for w in plan["warnings"])
    text = run("plan", "--docs", "1e6", "--from-sweep", str(SWEEP_CPU), "--growth", "0.01")
    assert text.returncode == 0 and "GPU" not in text.stdout and "standing fleet 1 CPU worker" in text.stdout
    assert first_line(text.stdout).startswith("worker: CPU worker (AMD")


def test_readme_plan_examples_run():
    """Item 5: every `embedlab plan` line of the README runs as written (from the repository root)."""
    readme = (REPO / "README.md").read_text()
    lines = [line.split("#")[0].split() for line in readme.splitlines()
             if line.strip().startswith("embedlab plan")]
    assert len(lines) >= 4 and not any("..." in line for line in lines)
    for words in lines:
        p = subprocess.run([*EMBEDLAB, *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, (words, p.stderr)


def test_compress_reports_bytes_searched_and_stored(made):
    """Item 6: binary+rescore searches 48 bytes but stores 48 + 1,536; the frontier is on stored bytes."""
    _, out, _ = made
    p = run("compress", str(out), "--methods", "float32,binary,binary+rescore", "--repeats", "1", "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["method"]: r for r in json.loads(p.stdout)["rows"]}
    rescore = rows["binary+rescore"]
    assert rescore["bytes_per_vector"] == 48 and rescore["stored_bytes_per_vector"] == 48 + 1536
    assert rows["float32"]["stored_bytes_per_vector"] == 1536 == rows["float32"]["bytes_per_vector"]
    assert rescore["pareto"] is False  # float32 stores less and is exact
    table = run("compress", str(out), "--methods", "float32,binary+rescore", "--repeats", "1")
    assert "| searched B/vec | stored B/vec |" in table.stdout and "frontier (stored)" in table.stdout


def test_default_overlap_scales_and_a_rerun_starts_nothing(made):
    """Item 7: `--chunk-tokens 64` alone works (overlap 8); a re-run with nothing to do starts no cluster."""
    import embedlab

    corpus, out, _ = made
    meta = json.loads((out / "_embedlab.json").read_text())
    assert meta["chunk_tokens"] == 64 and meta["overlap"] == 8
    p = run("embed", str(corpus), "--out", str(out), "--chunk-tokens", "64", "--no-progress", "--json")
    again = json.loads(p.stdout)
    assert p.returncode == 0 and again["partitions_skipped"] == again["partitions"] >= 1
    assert again["cluster"] == {} and again["encoder"] == {} and again["startup_seconds"] == 0
    assert embedlab.open_store(out).to_arrow().num_rows == again["chunks"]


COMMANDS = ["embed", "chunk", "verify", "search", "merge", "eval", "compress", "sweep", "plan", "update", "compact",
            "stream", "migrate"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_reads_like_the_readme(command):
    """Item 8: no `<bool>`, `<int>`, `{out}` or `[corpus]`; arguments in capitals, as in the README."""
    p = run(command, "--help", timeout=60)
    assert p.returncode == 0, p.stderr
    for odd in ("<bool>", "<int>", "<str>", "<path>", "<float>", "{", "[corpus]", "[out]"):
        assert odd not in p.stdout, (command, odd)
    usage = first_line(p.stdout)
    assert usage.startswith(f"Usage: embedlab {command} [OPTIONS]")
    assert usage == usage.rstrip() and not re.search(r"\b[a-z_]+\b$", usage.split("[OPTIONS]")[1] or "X")


def test_command_list_has_whole_sentences():
    p = run("--help", timeout=60)
    listed = [line.split(None, 1) for line in p.stdout.split("Commands:")[1].strip().splitlines()]
    assert [name for name, _ in listed] == COMMANDS
    assert all(text.endswith(".") and not text.endswith("...") for _, text in listed)
