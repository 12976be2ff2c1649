"""The ONNX Runtime peer of the precision benchmark: sentence-transformers' ONNX backend, rebuilt.

sentence-transformers' ONNX backend needs optimum-onnx, which pins transformers < 4.58; this
project runs transformers 5. So the peer is built the way that backend builds it, from the same
weights: the BERT encoder exported with torch's TorchScript ONNX exporter (opset 14, dynamic
batch and sequence axes, the inputs input_ids / attention_mask / token_type_ids), and for qint8
the graph quantized with ONNX Runtime's own ``ONNXQuantizer`` under the options that
``export_dynamic_quantized_onnx_model(model, "avx512_vnni")`` passes it (optimum's
``AutoQuantizationConfig.avx512_vnni(is_static=False)``: dynamic, QOperator / IntegerOps, uint8
asymmetric activations, int8 symmetric per-channel weights, no reduced range, every op ONNX
Runtime can quantize dynamically). Inference is that backend's: the ONNX Runtime CPU session,
mean pooling over the attention mask and L2 normalisation, texts sorted by length and cut into
batches of ``batch_size`` as ``SentenceTransformer.encode`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def export_onnx(model_path: str, out: Path) -> Path:
    """Export the model's encoder (last hidden state) to ``out`` and check it against torch."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_path, attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):  # the additive mask spelled out: transformers 5's mask helpers do not trace
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.m.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            ext = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
            return self.m.encoder(h, attention_mask=ext).last_hidden_state

    wrapper = Encoder(model).eval()
    ids = torch.randint(1000, 5000, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    axes = {0: "batch", 1: "sequence"}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(wrapper, (ids, mask, torch.zeros_like(ids)), str(out), dynamo=False, opset_version=14,
                      input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["last_hidden_state"],
                      dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                    "last_hidden_state": axes})
    wrapper.eval()
    ids = torch.randint(1000, 5000, (3, 41))
    mask = torch.ones_like(ids)
    mask[2, 17:] = 0
    session = _session(out, 1)
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                             "token_type_ids": np.zeros_like(ids.numpy())})[0]
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    err = float(np.abs(got - want)[mask.numpy().astype(bool)].max())
    if err > 1e-3:
        raise RuntimeError(f"ONNX export of {model_path} differs from torch by {err}")
    return out


def quantize_avx512_vnni(src: Path, out: Path) -> Path:
    """``src`` dynamically quantized as ``export_dynamic_quantized_onnx_model(.., "avx512_vnni")`` does."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.quant_utils import QuantizationMode
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    quantizer = ONNXQuantizer(
        onnx.load(str(src)), per_channel=True, reduce_range=False, mode=QuantizationMode.IntegerOps,
        static=False, weight_qType=QuantType.QInt8, activation_qType=QuantType.QUInt8, tensors_range=None,
        nodes_to_quantize=[], nodes_to_exclude=[], op_types_to_quantize=list(IntegerOpsRegistry),
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "EnableSubgraph": False,
                       "ForceSymmetric": False, "AddQDQPairToWeight": False, "DedicatedQDQPair": False,
                       "QDQOpTypePerChannelSupportToAxis": {}})
    quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(out), False)
    return out


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # ONNX Runtime's pool threads spin after each run by default; in a process that also runs
    # torch (the benchmark alternates them) the spinning threads take the cores from torch's rows
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """sentence-transformers' ONNX backend's encode: sort by length, batch, mean-pool, normalise."""

    def __init__(self, path: Path, tokenizer, max_length: int, threads: int):
        self.session = _session(path, threads)
        self.tokenizer = tokenizer  # a transformers tokenizer
        self.max_length = max_length

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        rows = []
        for i in range(0, len(texts), batch_size):
            batch = [texts[j] for j in order[i:i + batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="np")
            mask = enc["attention_mask"].astype(np.int64)
            hidden = self.session.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                                             "attention_mask": mask,
                                             "token_type_ids": np.zeros_like(mask)})[0]
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
            rows.append(pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None))
        out = np.empty((len(texts), rows[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(rows)
        return out
