"""A tiny model with a float32 and an int64 input, two outputs and a dynamic batch."""

from __future__ import annotations

from infercmp.workload.plugins import ModelPlugin


def _module():
    import torch
    from torch import nn

    class TwoIO(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.mix = nn.Linear(16 + 8, 8)
            self.head = nn.Linear(8, 1)

        def forward(self, features: torch.Tensor, token_ids: torch.Tensor):
            tokens = self.embed(token_ids).mean(dim=1)
            embedding = torch.tanh(self.mix(torch.cat([features, tokens], dim=1)))
            return self.head(embedding), embedding

    torch.manual_seed(0)
    return TwoIO().eval()


class TinyTwoIO(ModelPlugin):
    name = "tiny-two-io"
    config_file = "tiny_two_io.yaml"

    def load_pytorch_module(self):
        return _module()
