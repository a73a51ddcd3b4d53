"""Reference outputs: the runtime inputs of an experiment and PyTorch's fp32 CPU outputs for
them, cached, which every engine's outputs are judged against (at a batch size too).

A reference's key covers the loaded module's fingerprint, its experiment, the runtime inputs
it holds and the plugin's source files (its preprocess: `infercmp.artifacts.key_material`).
Parity at batch B is judged against the stacked reference: the PyTorch fp32 outputs of the
example repeated along each output's `batch_size` axis (identical rows in, identical rows
out), or, for a plugin's own batched inputs (`batch_inputs`), PyTorch run on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import StrictInt

from infercmp.artifacts.cache import (
    ArtifactCache,
    CacheEntry,
    EntryMeta,
    content_key,
    register_kind,
)
from infercmp.artifacts.key_material import module_material, plugin_code
from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import
from infercmp.workload.batching import BATCH_DIM, input_axes, output_axes, stack
from infercmp.workload.inputs import example_runtime_inputs
from infercmp.workload.module import check_outputs_against_config, load_module, run_pytorch
from infercmp.workload.plugins import ModelPlugin, check_runtime_inputs
from infercmp.workload.shapes import Experiment

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

REFERENCE_FILE = "reference.npz"


class ReferenceMeta(EntryMeta):
    """A `reference` entry's metadata."""

    model: str
    experiment: list[list[StrictInt]]
    label: str


register_kind("reference", (REFERENCE_FILE,), ReferenceMeta)


def _store(
    cache: ArtifactCache,
    key: str,
    inputs: Sequence[np.ndarray],
    outputs: Sequence[np.ndarray],
    meta: dict[str, Any],
) -> CacheEntry:
    """Commit `inputs` and `outputs` as the reference entry `key` (`input_i`, `output_i`)."""
    with cache.staging() as staged:
        arrays = {f"input_{i}": a for i, a in enumerate(inputs)}
        arrays.update({f"output_{i}": a for i, a in enumerate(outputs)})
        # numpy's stub reads a ** dict as possibly holding its allow_pickle flag
        np.savez(staged / REFERENCE_FILE, **arrays)  # type: ignore[arg-type]
        return cache.store("reference", key, staged, meta)


def ensure_reference(
    plugin: ModelPlugin, cache: ArtifactCache, experiment: Experiment, *, force: bool = False
) -> Path:
    """The npz of runtime inputs and PyTorch fp32 CPU outputs for `experiment` (cached).

    Keys are `input_0..` and `output_0..` in config order.
    """
    config = plugin.config
    shapes = [list(s) for s in experiment.shapes]
    inputs = example_runtime_inputs(plugin, experiment)
    module, identity = load_module(plugin)
    code = plugin_code(plugin)
    key = content_key(
        module_material(
            plugin, identity, inputs, kind="reference", experiment=shapes, plugin_code=code
        )
    )
    with cache.lock("reference", key):
        if force:
            cache.remove("reference", key)
        entry = cache.lookup("reference", key)
        if entry is None:
            outputs = run_pytorch(plugin, module, inputs)
            # Every engine is judged against these: an output contradicting the config is
            # the model's (or the config's) mistake, whichever engines run.
            check_outputs_against_config(config, outputs, f"{experiment.label} example")
            meta = {"model": config.name, "experiment": shapes, "label": experiment.label}
            entry = _store(cache, key, inputs, outputs, meta)
    return entry.file(REFERENCE_FILE)


def _plugins_batch(
    plugin: ModelPlugin, own: Sequence[np.ndarray], batch: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The plugin's own inputs at `batch` (checked) and PyTorch's outputs for them."""
    config = plugin.config
    check_runtime_inputs(config, own)
    wrong = [
        f"'{spec.name}' has {a.shape[axis]}"
        for spec, a, axis in zip(config.inputs, own, input_axes(config))
        if axis is not None and a.shape[axis] != batch
    ]
    if wrong:
        raise InfercmpError(
            f"model '{config.name}': batch_inputs(..., {batch}) returned "
            f"{', '.join(wrong)} rows along {BATCH_DIM}; it must return {batch}"
        )
    batched = list(own)
    module, _ = load_module(plugin)
    return batched, run_pytorch(plugin, module, batched)


def ensure_batched_reference(
    plugin: ModelPlugin, cache: ArtifactCache, experiment: Experiment, batch: int | None
) -> Path:
    """The reference npz (`input_i`, `output_i`) of `experiment` at `batch`, through the cache.

    batch None is the experiment's own reference (`ensure_reference`) unchanged.
    """
    base = ensure_reference(plugin, cache, experiment)
    if batch is None:
        return base
    config = plugin.config
    with np.load(base, allow_pickle=False) as data:
        inputs = [data[f"input_{i}"] for i in range(len(config.inputs))]
        outputs = [data[f"output_{i}"] for i in range(len(config.outputs))]
    own = plugin.batch_inputs(inputs, batch)
    # The base entry's key covers the model, its code and the experiment; the path holds it.
    key = content_key({"kind": "batched-reference", "base": str(base), "batch": batch})
    with cache.lock("reference", key):
        entry = cache.lookup("reference", key)
        if entry is not None:
            return entry.file(base.name)
        if own is None:
            batched = stack(inputs, input_axes(config), batch)
            expected = stack(outputs, output_axes(config), batch)
        else:
            batched, expected = _plugins_batch(plugin, own, batch)
        meta = {
            "model": config.name,
            "experiment": [list(s) for s in experiment.shapes],
            "label": f"{experiment.label} batch {batch}",
            "batch": batch,
        }
        entry = _store(cache, key, batched, expected, meta)
    return entry.file(base.name)
