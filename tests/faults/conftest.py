from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A small random-weight BERT (real tokenizer) for fault runs that must be fast."""
    from embedlab.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def hot_model(tmp_path_factory):
    """A tiny model whose activations overflow in fp16 (inf) but not in fp32."""
    from embedlab.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("hot") / "model", seed=1, scale_last_layer=1e5)
