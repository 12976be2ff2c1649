"""embedlab makes torch's OpenMP threads sleep when idle, before torch loads, and keeps a user's choice."""

from __future__ import annotations

import os
import subprocess
import sys

from embedlab.openmp import WAIT_POLICY, prefer_sleeping_threads

PROBE = ("import os, sys, embedlab, torch; "
         "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")


def probe(**env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    return subprocess.run([sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True,
                          check=True).stdout.split()


def test_import_sets_passive_before_torch_loads() -> None:
    before = subprocess.run([sys.executable, "-c", "import sys, embedlab; print('torch' in sys.modules)"],
                            env={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"},
                            capture_output=True, text=True, check=True).stdout.strip()
    assert before == "False"  # so libgomp, loaded with torch later, reads the value set here
    assert probe() == [WAIT_POLICY, "True"]


def test_user_choice_is_kept() -> None:
    assert probe(OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "True"]
    environ = {"OMP_WAIT_POLICY": "active"}
    assert prefer_sleeping_threads(environ) == "active" and environ == {"OMP_WAIT_POLICY": "active"}
    assert prefer_sleeping_threads({}) == "PASSIVE"
