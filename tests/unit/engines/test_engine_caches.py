"""Where each engine keeps its own caches under EngineSpec.cache_dir (bench --cold), and the
words its descriptor says them in; the GPU paths against their documented options."""

from __future__ import annotations

from pathlib import Path

import pytest

from infercmp.engines import EngineSpec
from infercmp.engines.onnxruntime.runtime import OnnxRuntimeEngine
from infercmp.engines.registry import get_descriptor


def cuda_spec(cache_dir: Path | None) -> EngineSpec:
    return EngineSpec(
        model="tiny-cnn", device="cuda", precision="fp32", artifact=Path("model.onnx"),
        input_names=("image",), output_names=("logits",), cache_dir=cache_dir,
    )  # fmt: skip


@pytest.mark.parametrize("given", [None, "/mine"])
def test_the_tensorrt_ep_keeps_its_engine_and_timing_caches_under_the_cache_dir(
    tmp_path, monkeypatch, given
):
    engine = OnnxRuntimeEngine()
    monkeypatch.setattr(engine, "_create_stream", lambda device_id: None)
    options = dict(get_descriptor("onnxruntime").parse_options({"execution_provider": "tensorrt"}))
    options["trt_engine_cache_path"] = given
    providers = engine._providers(cuda_spec(tmp_path), options, ort=None)
    name, trt = providers[0]
    assert name == "TensorrtExecutionProvider" and trt["trt_engine_cache_enable"] is True
    if given is None:  # bench --cold's directory
        assert trt["trt_engine_cache_path"] == str(tmp_path / "ort-tensorrt")
        assert trt["trt_timing_cache_enable"] is True
        assert trt["trt_timing_cache_path"] == str(tmp_path / "ort-tensorrt")
    else:  # the user's own path wins
        assert trt["trt_engine_cache_path"] == "/mine" and "trt_timing_cache_path" not in trt
    plain = dict(engine._providers(cuda_spec(None), {**options, "trt_engine_cache_path": None},
                                   ort=None)[0][1])  # fmt: skip
    assert "trt_engine_cache_enable" not in plain and "trt_timing_cache_enable" not in plain


def test_every_built_in_engine_says_what_cold_clears():
    for name in ("pytorch", "onnxruntime", "openvino", "tensorrt"):
        caches = get_descriptor(name).engine_caches
        assert isinstance(caches, tuple) and caches and all(isinstance(c, str) for c in caches)
    assert "Inductor" in get_descriptor("pytorch").engine_caches[0]
    assert "CACHE_DIR" in get_descriptor("openvino").engine_caches[0]
