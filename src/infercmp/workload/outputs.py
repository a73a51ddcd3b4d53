"""The one rule that turns what a model's module returns into its outputs, in config order.

The PyTorch reference, the ONNX exporter's wrapper and the PyTorch engine all use it, so a
dict returned in another order than the config's `outputs` is read the same way everywhere:
by name. (Before, the reference read dicts by name and the others by insertion order, and
PyTorch failed parity against itself.) Nothing here imports torch: the engine calls it in its
timed loop and the CLI may import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infercmp.core.errors import InfercmpError


def flatten_outputs(result: Any, output_names: Sequence[str], model: str) -> list[Any]:
    """`result` as a list of tensors in `output_names` order.

    A tensor is one output; a tuple or list gives its items in order (nested ones flattened
    depth-first, as torch.export does); a dict gives the value of each config output by name
    (further keys are not outputs and are left out).
    """
    if isinstance(result, dict):
        missing = [name for name in output_names if name not in result]
        if missing:
            raise InfercmpError(
                f"model '{model}': the module returned a dict without output(s) "
                f"{', '.join(missing)} (its keys: {', '.join(map(str, result))})"
            )
        outputs = [result[name] for name in output_names]
    elif isinstance(result, list | tuple):
        outputs = _flat(result, model)
    else:
        outputs = [result]
    for output in outputs:
        if not hasattr(output, "shape"):
            raise InfercmpError(
                f"model '{model}': the module returned {type(output).__name__} where a tensor "
                "was expected; return a tensor, a tuple of tensors or a dict of them by output "
                "name"
            )
    if len(outputs) != len(output_names):
        raise InfercmpError(
            f"model '{model}': the module returned {len(outputs)} output(s) but the config "
            f"declares {len(output_names)} ({', '.join(output_names)})"
        )
    return outputs


def _flat(items: list | tuple, model: str) -> list[Any]:
    flat: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            # Inside a tuple, a dict's keys cannot be matched to the config's names.
            raise InfercmpError(
                f"model '{model}': the module returned a dict inside a {type(items).__name__}; "
                "return one dict of tensors by output name, or a flat tuple"
            )
        flat.extend(_flat(item, model) if isinstance(item, list | tuple) else [item])
    return flat
