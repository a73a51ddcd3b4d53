"""A tiny transformer encoder: two int64 inputs, two outputs, dynamic batch and sequence.

It is the case where the TorchScript exporter bakes the sequence length into the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from infercmp.core.lazy import lazy_import
from infercmp.workload.plugins import ModelPlugin

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

VOCAB = 100


def _module():
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 32)
            layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True)
            # Nested tensors are an eager-mode fast path that the exporters cannot trace.
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
            hidden = self.encoder(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
            return hidden, pooled

    torch.manual_seed(0)
    return Encoder().eval()


class TinyEncoder(ModelPlugin):
    name = "tiny-encoder"
    config_file = "tiny_encoder.yaml"

    def load_example_inputs(self, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        ids_shape, mask_shape = shapes
        rng = np.random.default_rng(0)
        ids = rng.integers(1, VOCAB, size=ids_shape, dtype=np.int64)
        mask = np.ones(mask_shape, dtype=np.int64)
        mask[..., mask_shape[-1] * 3 // 4 :] = 0  # padded tail, as in a real batch
        mask[..., 0] = 1
        return [ids, mask]

    def load_pytorch_module(self):
        return _module()
