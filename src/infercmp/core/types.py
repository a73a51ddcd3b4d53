"""The vocabularies every stage shares: devices, precisions, and the statuses of a worker, a
combination and a run. Each is written once here; tuples for loops and checks derive from them."""

from __future__ import annotations

from typing import Literal, get_args

Device = Literal["cpu", "cuda"]
# int8: weights and activations quantized after calibration (infercmp.artifacts.quantize); an
# engine declares on which devices it runs it (EngineDescriptor.precisions_on).
Precision = Literal["fp32", "fp16", "bf16", "int8"]

# What one worker process reports (core.contract.WorkerResult.status).
WorkerStatus = Literal["ok", "failed", "oom", "unsupported"]
# What the run store records for one combination, and for the run as a whole.
ComboStatus = Literal["ok", "failed", "skipped", "timeout", "crashed", "oom", "interrupted"]
RunStatus = Literal["running", "complete", "interrupted", "failed"]

DEVICES: tuple[Device, ...] = get_args(Device)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
