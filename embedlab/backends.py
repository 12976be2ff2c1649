"""Which backend a model name runs on: the real encoder, or the simulated device (``sim:...``).

The worker path (load, encode, describe) is the same for both, so a pipeline run on a CPU
machine with ``--model sim:r_max=66000,b_half=96`` exercises exactly the code a GPU run does,
at a GPU-class rate (:mod:`embedlab.simdevice`).
"""

from __future__ import annotations

from embedlab.config import EncodeConfig
from embedlab.encoder import Encoder, ModelInfo, cached_encoder, describe_model
from embedlab.simdevice import SimDevice, cached_sim_device, is_sim_model, parse_sim_model, sim_model_info


def describe(name: str, revision: str | None = None) -> ModelInfo:
    """:func:`embedlab.encoder.describe_model`, or a simulated device's description."""
    if is_sim_model(name):
        return sim_model_info(parse_sim_model(name))
    return describe_model(name, revision)


def worker_encoder(cfg: EncodeConfig) -> Encoder | SimDevice:
    """The process's encoder for ``cfg`` (loaded once per worker), simulated for ``sim:`` names."""
    if is_sim_model(cfg.model):
        return cached_sim_device(cfg.model, cfg.batch_size, cfg.max_batch_tokens)
    return cached_encoder(cfg)
