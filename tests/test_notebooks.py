"""Execute the notebooks end to end (small CPU settings) with nbclient, in this interpreter's kernel."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


@pytest.mark.parametrize("name", ["batch_knee.ipynb", "cost_planner.ipynb"])
def test_notebook_executes(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    # jupyter_client starts the "python3" kernelspec ("python -m ipykernel_launcher") with sys.executable
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert nb.cells[-1].outputs[0].text.strip() == sys.prefix  # the kernel ran in this environment
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_python_api_notebook_executes():
    """The Python API notebook: embed, search with text, pandas/Arrow/numpy, evaluate; nothing from the CLI."""
    nb = nbformat.read(NOTEBOOKS / "python_api.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert text.splitlines()[[i for i, t in enumerate(text.splitlines()) if t.startswith("corpus")][0]].endswith(
        "(jsonl)")
    hits = [line for line in text.splitlines() if line[:1] in "123" and "  " in line]
    assert len(hits) >= 3 and all(len(h.split(None, 3)) == 4 for h in hits[:3])  # rank, score, doc id, text
    assert "unit norm: True" in text
    assert any("text/html" in o.get("data", {}) for o in outputs)  # the DataFrame


def test_notebooks_import_nothing_from_the_cli():
    for path in NOTEBOOKS.glob("*.ipynb"):
        source = "".join("".join(c.source) for c in nbformat.read(path, as_version=4).cells)
        assert "embedlab.cli" not in source and "embedlab.commands" not in source, path.name
