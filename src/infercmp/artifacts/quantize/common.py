"""What the int8 quantizers share: exclusions, cache keys, entry metadata and calibration data.

A quantized model's cache key covers the source model's content key, the method and its
parameters, the calibration samples' fingerprint, the exclusion list and the versions of the
tools that quantize (`quant_key`). Its entry records how long calibration took, on how many
samples of which source, and what was kept in float (`QuantMeta`); `Quantized.facts` is what
an engine reports of it (`Converted.facts`, stored in the run's engine info).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import StrictFloat, StrictInt, StrictStr

from infercmp.artifacts.cache import ArtifactCache, CacheEntry, EntryMeta, content_key
from infercmp.artifacts.onnx_scopes import module_paths, nodes_under
from infercmp.artifacts.samples import CalibrationSet, iter_inputs
from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
    import onnx
else:
    np = lazy_import("numpy")
    onnx = lazy_import("onnx")

#: Separates module paths in the `int8_exclude` engine option (`--engine` splits on ',').
EXCLUDE_SEPARATOR = ";"


class QuantMeta(EntryMeta):
    """A quantized model's entry metadata."""

    method: StrictStr
    calibration_seconds: StrictFloat
    calibration_samples: StrictInt
    calibration_source: StrictStr
    calibration_fingerprint: StrictStr
    exclude: list[StrictStr]  # module paths kept in float, as asked
    excluded_nodes: list[StrictStr]  # what they mapped to (ONNX nodes, or the same paths)
    quantized: StrictInt  # quantized operators/layers the quantizer inserted or converted
    tools: dict[StrictStr, StrictStr]


@dataclass(frozen=True)
class QuantizeResult:
    """What one quantizer call did: seconds of calibration and quantization (the quantizer's
    own call: statistics collection and the rewrite, not reading or saving the model), the
    operators it quantized, and the nodes (or module paths) it kept in float."""

    seconds: float
    nodes_quantized: int
    excluded: tuple[str, ...] = ()
    samples: int = 0


@dataclass(frozen=True)
class Quantized:
    """A quantized model in the cache: `path` is the file an engine loads."""

    path: Path
    key: str
    cached: bool
    meta: QuantMeta

    def facts(self) -> dict[str, Any]:
        """What the engine info records of this model (`Converted.facts["int8"]`)."""
        m = self.meta
        return {
            "method": m.method,
            "calibration_s": round(m.calibration_seconds, 3),
            "calibration_samples": m.calibration_samples,
            "calibration_source": m.calibration_source,
            "calibration_fingerprint": m.calibration_fingerprint,
            "excluded_modules": list(m.exclude),
            "excluded_nodes": list(m.excluded_nodes),
            "quantized_ops": m.quantized,
            "cached": self.cached,
            "tools": dict(m.tools),
        }

    def detail(self, what: str) -> str:
        """One line for progress and engine info: what it is and how it was calibrated."""
        m = self.meta
        source = "dataset" if m.calibration_source == "dataset" else "RANDOM-INPUT"
        kept = f", {len(m.exclude)} module path(s) kept in float" if m.exclude else ""
        when = "cached" if self.cached else f"calibrated in {m.calibration_seconds:.1f} s"
        return f"{what}, {m.calibration_samples} {source} samples, {when}{kept}"


def parse_exclude(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Module path prefixes from `int8_exclude` ('layer4.2;fc'), deduplicated and sorted (the
    cache key must not depend on the order they were typed in)."""
    if text is None:
        return ()
    parts = text.split(EXCLUDE_SEPARATOR) if isinstance(text, str) else list(text)
    return tuple(sorted({p.strip() for p in parts if p.strip()}))


def require_calibration(calibration: CalibrationSet | None, engine: str) -> CalibrationSet:
    """The calibration set, or one line saying int8 needs one."""
    if calibration is None:
        raise InfercmpError(
            f"engine '{engine}': int8 needs calibration samples and none were given (the run "
            "makes them from the plugin's dataset, or from random inputs without one)"
        )
    if calibration.count <= 0:
        raise InfercmpError(
            f"engine '{engine}': int8 needs calibration samples; {calibration.path} has none"
        )
    return calibration


def tool_versions(*distributions: str) -> dict[str, str]:
    """Installed versions of the distributions that quantize (part of the cache key)."""
    found = {}
    for dist in distributions:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "absent"
    return found


def quant_key(
    source_key: str,
    method: str,
    params: dict[str, Any],
    calibration: CalibrationSet,
    exclude: Iterable[str],
    tools: dict[str, str],
) -> str:
    """The cache key of a quantized model (see the module docstring)."""
    return content_key(
        {
            "source": source_key,
            "method": method,
            "params": params,
            "calibration": calibration.fingerprint,
            "exclude": sorted(exclude),
            "tools": tools,
        }
    )


def calibration_rows(
    calibration: CalibrationSet, ranks: Sequence[int | None]
) -> Iterator[list[np.ndarray]]:
    """Each calibration sample's inputs, shaped for a model whose inputs have `ranks`.

    A sample stored without its batch axis (one rank short) gets a leading axis of 1; None:
    the rank is unknown, the array is given as stored.
    """
    for row in iter_inputs(calibration.path):
        if len(row) != len(ranks):
            raise InfercmpError(
                f"the calibration samples {calibration.path} have {len(row)} inputs per sample "
                f"but the model takes {len(ranks)}"
            )
        yield [
            a[None] if rank is not None and a.ndim == rank - 1 else a for a, rank in zip(row, ranks)
        ]


def onnx_nodes_for(model: onnx.ModelProto | Path, prefixes: Sequence[str]) -> list[str]:
    """The names of the ONNX nodes made from the modules `prefixes` (paths of the plugin's
    module, as `named_modules()` gives them) or inside them; one line when a path matches no
    node, naming the paths there are."""
    if not prefixes:
        return []
    if isinstance(model, Path):
        model = onnx.load(str(model), load_external_data=False)
    paths = module_paths(model)  # in the user's terms (onnx_scopes drops the export wrapper)
    names: list[str] = []
    for prefix in prefixes:
        found = nodes_under(model, [prefix])
        if not found:
            shown = sorted(p for p in paths if "." not in p)
            raise InfercmpError(
                f"int8_exclude: no ONNX node comes from module '{prefix}'; the model's "
                f"top-level modules are: {', '.join(shown) or 'none recorded'}"
            )
        names.extend(n for n in found if n not in names)
    return names


Produce = Callable[[Path], QuantizeResult]


def ensure_quantized(
    cache: ArtifactCache,
    kind: str,
    key: str,
    file: str,
    produce: Produce,
    method: str,
    calibration: CalibrationSet,
    exclude: Sequence[str],
    tools: dict[str, str],
) -> Quantized:
    """The entry `kind/key`, made by `produce(staging_dir)` when absent (one builder at a
    time); `file` is the entry's file an engine loads."""
    entry = cache.lookup(kind, key)
    cached = entry is not None
    if entry is None:
        with cache.lock(kind, key):
            entry = cache.lookup(kind, key)
            cached = entry is not None
            if entry is None:
                with cache.staging() as staged:
                    result = produce(staged)
                    meta = QuantMeta(
                        method=method,
                        calibration_seconds=float(result.seconds),
                        calibration_samples=result.samples or calibration.count,
                        calibration_source=calibration.source,
                        calibration_fingerprint=calibration.fingerprint,
                        exclude=list(exclude),
                        excluded_nodes=list(result.excluded),
                        quantized=result.nodes_quantized,
                        tools=tools,
                    )
                    entry = cache.store(kind, key, staged, meta.model_dump())
    return _quantized(entry, file, cached)


def _quantized(entry: CacheEntry, file: str, cached: bool) -> Quantized:
    return Quantized(entry.file(file), entry.key, cached, QuantMeta.model_validate(entry.meta))


class Stopwatch:
    """`with Stopwatch() as watch: ...; watch.seconds`."""

    seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
