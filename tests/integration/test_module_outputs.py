"""One flattening rule for module outputs: by name for dicts, everywhere (issue 18, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from infercmp.core.errors import InfercmpError
from infercmp.store.run_store import RunStore
from infercmp.workload.outputs import flatten_outputs

NAMES = ("score", "embedding")
SCORE, EMBEDDING = np.zeros((2, 1)), np.ones((2, 8))


@pytest.mark.parametrize(
    "result",
    [
        (SCORE, EMBEDDING),
        [SCORE, EMBEDDING],
        ((SCORE,), [EMBEDDING]),
        {"embedding": EMBEDDING, "score": SCORE},  # the config's order is not the dict's
        {"score": SCORE, "extra": SCORE * 2, "embedding": EMBEDDING},
    ],
    ids=["tuple", "list", "nested", "dict in another order", "dict with a further key"],
)
def test_every_form_gives_the_outputs_in_config_order(result):
    assert flatten_outputs(result, NAMES, "m") == [SCORE, EMBEDDING]


def test_a_single_tensor_is_one_output():
    assert flatten_outputs(SCORE, ("score",), "m") == [SCORE]


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (
            {"score": SCORE, "emb": EMBEDDING},
            "model 'm': the module returned a dict without output(s) embedding (its keys: "
            "score, emb)",
        ),
        (
            (SCORE,),
            "model 'm': the module returned 1 output(s) but the config declares 2 "
            "(score, embedding)",
        ),
        (
            (SCORE, {"embedding": EMBEDDING}),
            "model 'm': the module returned a dict inside a tuple; return one dict of tensors "
            "by output name, or a flat tuple",
        ),
        (
            (SCORE, None),
            "model 'm': the module returned NoneType where a tensor was expected; return a "
            "tensor, a tuple of tensors or a dict of them by output name",
        ),
    ],
)
def test_outputs_that_do_not_match_the_config_are_one_clear_error(result, message):
    with pytest.raises(InfercmpError) as info:
        flatten_outputs(result, NAMES, "m")
    assert str(info.value) == message


PLUGIN = '''
from infercmp.workload.config import parse_config
from infercmp.models.tiny_two_io import TinyTwoIO


class DictOut(TinyTwoIO):
    """tiny-two-io returning {"embedding": ..., "score": ...}: the config's order reversed."""

    name = "dict-out"

    def load_config(self):
        return parse_config({**TinyTwoIO().config.model_dump(), "name": "dict-out"}, "dict-out")

    def load_pytorch_module(self):
        import torch

        inner = super().load_pytorch_module()

        class ReversedDict(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, features, token_ids):
                score, embedding = self.inner(features, token_ids)
                return {"embedding": embedding, "score": score}

        return ReversedDict().eval()
'''


def test_a_dict_in_another_order_than_the_config_exports_and_passes_parity(tmp_path):
    """Before: PyTorch failed parity against itself (max abs 1) and the export was refused."""
    site = tmp_path / "site"
    (site / "dict_out_plugin").mkdir(parents=True)
    (site / "dict_out_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "dict_out_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dict-out-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[infercmp.models]\ndict-out = dict_out_plugin:DictOut\n"
    )
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    code = "import sys; from infercmp.cli import main; sys.argv[0] = 'infercmp'; main()"
    args = ["bench", "dict-out", "-d", "cpu", "-e", "pytorch", "-e", "onnxruntime"]
    args += ["--iters", "10", "--warmup", "2", "--sample-hz", "0", "--out", "runs"]
    args += ["--cache-dir", "cache"]
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = (tmp_path / "runs").iterdir()
    rows = RunStore.open(run).results
    assert {r.engine: r.status for r in rows} == {"pytorch": "ok", "onnxruntime": "ok"}
    for row in rows:
        assert row.parity["ok"], row.parity
        assert [o["name"] for o in row.parity["outputs"]] == ["score", "embedding"]
