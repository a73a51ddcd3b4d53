"""tune never tries int8 on its own: parity on random inputs cannot judge a quantized model."""

from __future__ import annotations

from infercmp.engines.descriptor import EngineDescriptor
from infercmp.tune.candidates import precisions_of


class _ThirdParty(EngineDescriptor):
    """An engine that declares int8 but no search space of its own."""

    name = "third-party"
    summary = "declares int8"
    precisions = ("fp32", "fp16", "int8")
    runtime = "nowhere:Engine"


def test_declared_int8_is_not_tried_unless_asked_for():
    descriptor = _ThirdParty()
    assert list(precisions_of(descriptor, "cpu", None)) == ["fp32", "fp16"]
    assert list(precisions_of(descriptor, "cpu", ["int8"])) == ["int8"]
