"""The model's PyTorch module: loaded once per plugin in fp32 eval mode on the CPU, its
fingerprint (which the cache keys of its artifacts cover), and its fp32 outputs.

The fingerprint (`ModuleIdentity`) is every parameter and buffer, by name, dtype, shape and
bytes; the module's class and its repr, which shows its structure and hyper-parameters; and
every nn.Module class in it with a hash of the file defining it. So a module that depends on
anything outside the plugin's files (an environment variable, a weights file, a download) can
never meet an artifact of another module, and its tensors are hashed once per load.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.core.errors import InfercmpError
from infercmp.core.files import read_regular
from infercmp.core.lazy import lazy_import
from infercmp.workload.config import DYNAMIC, ModelConfig
from infercmp.workload.outputs import flatten_outputs
from infercmp.workload.plugins import ModelPlugin

if TYPE_CHECKING:
    import numpy as np
    import torch
else:
    np = lazy_import("numpy")
    torch = lazy_import("torch")


@dataclass(frozen=True)
class ModuleIdentity:
    """The fingerprint of a loaded module, which its artifacts' cache keys cover."""

    tensors: str  # every parameter and buffer: name, dtype, shape and bytes
    structure: str  # the module's class and repr
    code: dict[str, str]  # every nn.Module class in it -> sha256 of its file


_LOADED: weakref.WeakKeyDictionary[ModelPlugin, tuple[Any, ModuleIdentity]] = (
    weakref.WeakKeyDictionary()
)


def _tensors_hash(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (non-persistent ones too), each byte read once."""
    digest = hashlib.sha256()
    named = [*module.named_parameters(), *module.named_buffers()]
    for name, tensor in sorted(named, key=lambda item: item[0]):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().data)  # a view: no copy
    return digest.hexdigest()


def _structure(module: torch.nn.Module) -> str:
    """The module's class and repr (its submodules, in order, with their hyper-parameters);
    object addresses a custom extra_repr may print are dropped, so the key stays stable."""
    cls = type(module)
    text = f"{cls.__module__}.{cls.__qualname__}\n{module!r}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def _code_identity(module: torch.nn.Module) -> dict[str, str]:
    """Every module class in the model and the sha256 of the file defining it."""
    code = {}
    for sub in module.modules():
        cls = type(sub)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name in code:
            continue
        try:
            code[name] = hashlib.sha256(read_regular(Path(inspect.getfile(cls)))).hexdigest()
        except (TypeError, OSError):
            code[name] = "unknown"
    return code


def load_module(plugin: ModelPlugin) -> tuple[torch.nn.Module, ModuleIdentity]:
    """The plugin's module in fp32 eval mode on the CPU, and its identity (memoised)."""
    if plugin in _LOADED:
        return _LOADED[plugin]
    try:
        module = plugin.load_pytorch_module()
    except InfercmpError:
        raise
    except Exception as exc:
        raise InfercmpError(
            f"model '{plugin.config.name}': load_pytorch_module() failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(module, torch.nn.Module):
        raise InfercmpError(
            f"model '{plugin.config.name}': load_pytorch_module() returned "
            f"{type(module).__name__}, expected a torch.nn.Module"
        )
    module = module.float().eval().cpu()
    identity = ModuleIdentity(_tensors_hash(module), _structure(module), _code_identity(module))
    _LOADED[plugin] = (module, identity)
    return module, identity


def run_pytorch(
    plugin: ModelPlugin, module: torch.nn.Module, inputs: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """PyTorch fp32 CPU outputs as numpy arrays, in config order."""
    config = plugin.config
    with torch.inference_mode():
        result = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
    outputs = flatten_outputs(result, config.output_names, config.name)
    return [o.detach().cpu().numpy() for o in outputs]


def check_outputs_against_config(config: ModelConfig, outputs: Sequence[Any], where: str) -> None:
    """Each output's rank and fixed dimensions are the config's runtime shape; `where` names the
    shape the outputs were computed at, for the error."""
    for spec, array in zip(config.outputs, outputs):
        runtime = spec.shape.runtime
        bad = array.ndim != len(runtime) or any(
            r != DYNAMIC and g != r for g, r in zip(array.shape, runtime)
        )
        if bad:
            raise InfercmpError(
                f"output '{spec.name}' has shape {list(array.shape)} at the {where} shape but "
                f"the config's runtime shape is {runtime}"
            )
