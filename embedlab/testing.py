"""A tiny real encoder for load and fault tests: random weights, the real tokenizer.

It is a genuine BERT model in the sentence-transformers layout (``modules.json``, pooling config),
only small, so a 200,000-chunk load run or a fault-injection run takes seconds per partition
instead of minutes. Its vectors are deterministic for a given seed; they are not meaningful for
retrieval, so quality claims always use a trained model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from embedlab.encoder import describe_model

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def make_tiny_model(path: Path | str, *, hidden: int = 32, layers: int = 2, max_len: int = 128,
                    seed: int = 0, scale_last_layer: float = 1.0, hot_word: str | None = None,
                    tokenizer_from: str = "sentence-transformers/all-MiniLM-L6-v2") -> Path:
    """Write a small randomly initialised BERT encoder to ``path`` and return it.

    Args:
        hidden: hidden size (the vector dimension).
        layers: transformer layers.
        max_len: max sequence length recorded in ``sentence_bert_config.json``.
        seed: weight initialisation seed.
        scale_last_layer: multiply the last layer's output weights by this factor; a large value
            (e.g. 1e5) makes fp16 activations overflow to inf, for numerical-fault tests.
        hot_word: a vocabulary word whose token overflows fp16 (and only it): its embedding is
            one large feature, which stays about sqrt(hidden) after each layer norm, and the last
            layer norm scales that feature by 14,000, so the token's output is ~78,000 (over fp16's
            65,504) while other tokens' stay under 4.7 x 14,000. Only chunks holding the word
            give non-finite vectors at fp16.
        tokenizer_from: model whose tokenizer files are copied.
    """
    import torch
    from transformers import BertConfig, BertModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    source = Path(describe_model(tokenizer_from).path)
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, path / name)
    vocab = sum(1 for _ in open(path / "vocab.txt", encoding="utf-8"))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=max(1, hidden // 16), intermediate_size=hidden * 2,
                        max_position_embeddings=max(512, max_len))
    model = BertModel(config).eval()
    if scale_last_layer != 1.0:
        with torch.no_grad():
            model.encoder.layer[-1].output.dense.weight.mul_(scale_last_layer)
            model.encoder.layer[-1].output.LayerNorm.weight.mul_(scale_last_layer)
    if hot_word is not None:
        token = [w.rstrip("\n") for w in open(path / "vocab.txt", encoding="utf-8")].index(hot_word)
        with torch.no_grad():
            model.embeddings.word_embeddings.weight[token] = 0.0
            model.embeddings.word_embeddings.weight[token, 0] = 100.0
            model.encoder.layer[-1].output.LayerNorm.weight[0] = 14_000.0
    model.save_pretrained(path)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_len}))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True}))
    return path
