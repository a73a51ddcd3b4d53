"""Model plugins: the base class plugin authors derive from, and entry-point discovery.

`import infercmp` imports this module, so it imports nothing heavy at module level: numpy loads
on first use (`infercmp.core.lazy`), keeping `infercmp --help` fast.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from infercmp.core.entrypoints import discover as discover_entry_points
from infercmp.core.entrypoints import load_named
from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import
from infercmp.workload.config import DYNAMIC, ModelConfig, load_config

if TYPE_CHECKING:
    from importlib import metadata

    import numpy as np
    import torch
else:
    np = lazy_import("numpy")

ENTRY_POINT_GROUP = "infercmp.models"
# Modules a plugin must not import at module level (docs/plugins.md): `infercmp models`
# imports every plugin, and torch alone turns 0.4 s into 2 s.
HEAVY_MODULES = ("torch", "onnxruntime", "tensorrt", "tensorrt_rtx")
EXAMPLE_SEED = 0


# Defined here, beside `load_dataset`, and re-exported by `infercmp.workload.dataset` (its
# documented home): the dataset module checks samples with this module's helpers, so it sits
# above it and this module cannot import it.
@dataclass(frozen=True)
class Sample:
    """One dataset sample: raw inputs as `load_example_inputs` returns them for one example
    (one array per config input; `preprocess` runs on them), and its label (None: none)."""

    inputs: Sequence[np.ndarray]
    label: Any = None


class ModelPlugin:
    """Base class of a model plugin, registered under the `infercmp.models` entry-point group.

    Subclasses set `name` and implement `load_pytorch_module()`. Import torch and other heavy
    modules inside methods, never at module level: `infercmp models` imports every plugin.
    """

    name: ClassVar[str]
    config_file: ClassVar[str] = "config.yaml"

    def load_config(self) -> ModelConfig:
        """The model's config; by default `config_file` next to the module defining the class."""
        return load_config(Path(inspect.getfile(type(self))).parent / self.config_file)

    @functools.cached_property
    def config(self) -> ModelConfig:
        """The model's config, loaded once."""
        return self.load_config()

    def load_example_inputs(self, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        """One raw array per config input, of the given example shapes (seeded, repeatable)."""
        inputs = self.config.inputs
        if len(shapes) != len(inputs):
            raise InfercmpError(
                f"model '{self.config.name}': got {len(shapes)} example shape(s) for "
                f"{len(inputs)} input(s) ({', '.join(self.config.input_names)})"
            )
        rng = np.random.default_rng(EXAMPLE_SEED)
        arrays = []
        for spec, shape in zip(inputs, shapes):
            dtype = spec.dtype
            if dtype.kind == "f":
                arrays.append(rng.standard_normal(shape).astype(dtype))
            elif dtype.kind == "b":
                arrays.append(rng.integers(0, 2, size=shape).astype(dtype))
            else:
                arrays.append(rng.integers(0, 10, size=shape).astype(dtype))
        return arrays

    def preprocess(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Turn raw example arrays into the tensors the model takes; unchanged by default."""
        return list(inputs)

    def batch_inputs(self, inputs: Sequence[np.ndarray], batch: int) -> list[np.ndarray] | None:
        """The runtime inputs at `batch` rows along `batch_size`, or None (the default) to let
        infercmp repeat the preprocessed example `batch` times (docs/plugins.md).

        `inputs` are what `preprocess` returned for the experiment. Return distinct rows when
        identical ones would flatter the model (a cache keyed on the input, say).
        """
        return None

    def load_dataset(self) -> Iterable[Sample] | None:
        """Samples with optional labels to measure accuracy on and calibrate int8 with, or None
        (the default: no dataset; int8 then calibrates on random inputs, labelled as such).

        Each `Sample.inputs` is in the form `load_example_inputs` returns for one example
        (raw: `preprocess` runs on it), one array per config input (docs/plugins.md).
        """
        return None

    def evaluate(self, outputs: Sequence[np.ndarray], labels: np.ndarray) -> dict[str, float]:
        """Named task metrics (`{"top1": 0.98}`) of outputs against labels; {} by default.

        `outputs[j]` is config output j for every sample, stacked along its batch axis (a
        new leading axis when it has none); `labels` holds the samples' labels in order (it is
        called only when the samples have labels). The config's `accuracy.primary` names the
        metric the table shows; `infercmp.top1(logits, labels)` computes top-1.
        """
        return {}

    def load_pytorch_module(self) -> torch.nn.Module:
        """The model's PyTorch module; every plugin implements it."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_pytorch_module()")


def check_runtime_inputs(config: ModelConfig, arrays: Sequence[np.ndarray]) -> None:
    """Check what `preprocess` returned against the config; name the input that is wrong."""
    if len(arrays) != len(config.inputs):
        raise InfercmpError(
            f"model '{config.name}': preprocess() returned {len(arrays)} arrays but the config "
            f"declares {len(config.inputs)} inputs ({', '.join(config.input_names)})"
        )
    for spec, array in zip(config.inputs, arrays):
        where = f"model '{config.name}', input '{spec.name}'"
        if not isinstance(array, np.ndarray):
            raise InfercmpError(
                f"{where}: preprocess() returned {type(array).__name__}, expected a numpy array"
            )
        runtime = spec.shapes.runtime
        if array.ndim != len(runtime):
            raise InfercmpError(
                f"{where}: preprocess() returned shape {tuple(array.shape)} (rank {array.ndim}) "
                f"but the config's runtime shape {runtime} has rank {len(runtime)}"
            )
        for axis, (got, want) in enumerate(zip(array.shape, runtime)):
            if want != DYNAMIC and got != want:
                raise InfercmpError(
                    f"{where}: dimension {axis} ({spec.shapes.dims_names[axis]}) is {got} "
                    f"but the config fixes it at {want}"
                )
        if array.dtype != spec.dtype:
            raise InfercmpError(
                f"{where}: preprocess() returned dtype {array.dtype} but the config says "
                f"{spec.dtype_str}"
            )


@dataclass
class PluginEntry:
    """One registered model: loaded on demand, or unavailable with the reason."""

    name: str
    package: str
    target: str
    entry_point: metadata.EntryPoint | None = None
    error: str | None = None
    # The heavy modules that importing this plugin pulled in (see `slow_import_warning`).
    heavy_imports: tuple[str, ...] = ()

    @functools.cached_property
    def plugin(self) -> ModelPlugin:
        if self.entry_point is None:
            raise InfercmpError(f"model '{self.name}' is unavailable: {self.error}")
        # Comparing sys.modules before and after costs nothing; a module imported earlier by
        # another plugin is that plugin's doing, and is reported for it.
        absent = [m for m in HEAVY_MODULES if m not in sys.modules]
        try:
            cls = self.entry_point.load()
        finally:
            self.heavy_imports = tuple(m for m in absent if m in sys.modules)
        if not (inspect.isclass(cls) and issubclass(cls, ModelPlugin)):
            raise TypeError(f"{self.target} is not a subclass of infercmp.ModelPlugin")
        if getattr(cls, "name", None) != self.name:
            raise TypeError(
                f"{self.target} has name {getattr(cls, 'name', None)!r} but is registered as "
                f"{self.name!r}"
            )
        instance = cls()
        _ = instance.config  # a broken config makes the plugin unavailable, not the CLI
        return instance

    @property
    def slow_import_warning(self) -> str | None:
        """One line naming the plugin when importing it imported torch (or the like)."""
        if not self.heavy_imports:
            return None
        return (
            f"plugin '{self.name}' (package '{self.package}') imports "
            f"{' and '.join(self.heavy_imports)} when it is imported, which slows every "
            "'infercmp models'; import it inside load_pytorch_module() (see docs/plugins.md)"
        )

    def load(self) -> ModelPlugin | None:
        """The plugin, or None with `error` set when it cannot be imported or configured."""
        if self.error is None:
            try:
                return self.plugin
            except Exception as exc:  # a third-party plugin may raise anything on import
                self.error = f"{type(exc).__name__}: {exc}"
        return None


def discover_plugins() -> dict[str, PluginEntry]:
    """Every model registered in the environment, by name; nothing is imported yet."""
    return {
        name: PluginEntry(name, e.package, e.target, entry_point=e.entry_point, error=e.error)
        for name, e in discover_entry_points(ENTRY_POINT_GROUP, "model").items()
    }


def get_plugin(name: str) -> ModelPlugin:
    """The plugin named `name`, or one clear error with the closest names ('gru' finds
    'newcomer-gru' by containment, 'mixd' finds 'mixed' by similarity)."""
    return load_named(discover_plugins(), name, "model")
