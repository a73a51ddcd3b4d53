"""PT2E on a module that calls one ReLU instance twice, as torchvision's ResNet blocks do."""

from __future__ import annotations

import numpy as np
import pytest

from infercmp.artifacts.quantize.pt2e import quantize_pt2e
from infercmp.artifacts.samples import CalibrationSet, Samples, write_samples

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")


class Block(torch.nn.Module):
    """conv -> relu -> conv -> add -> the same relu: a conv + add + relu pattern whose ReLU
    is a reused instance."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.relu = torch.nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv1(x))
        return self.relu(self.conv2(y) + x)


def test_a_reused_relu_quantizes(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[rng.standard_normal((1, 4, 8, 8)).astype(np.float32)] for _ in range(4)]
    write_samples(tmp_path / "calibration.npz", Samples(rows))
    calibration = CalibrationSet(tmp_path / "calibration.npz", 4, "f", "random")
    torch.manual_seed(0)
    block = Block().eval()
    # Before: "PT2E quantization failed: ValueError: Input partition has more than one
    # output node" (the two calls of `relu` made one partition).
    result = quantize_pt2e(
        block, [torch.from_numpy(rows[0][0])], calibration, tmp_path / "block.pt2"
    )
    assert result.nodes_quantized == 2 and result.samples == 4  # both convs' weights
    program = torch.export.load(str(tmp_path / "block.pt2"))
    x = torch.from_numpy(rows[1][0])
    with torch.no_grad():
        got, want = program.module()(x), block(x)
    # int8 of this block is within a few percent of its float outputs' scale
    assert float((got - want).abs().max()) < 0.1 * float(want.abs().max())
