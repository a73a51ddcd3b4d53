"""Parse `--shape` strings into one example shape per model input."""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from infercmp.core.errors import InfercmpError

if TYPE_CHECKING:
    from infercmp.workload.config import ModelConfig

# The example arrays are built in memory before anything runs, and 2^31 elements is also the
# largest tensor many kernels index; beyond it a typo (an extra zero) would exhaust the RAM.
MAX_EXAMPLE_ELEMENTS = 2**31 - 1

_FORMS = (
    "use '224,224,3' or '224x224x3' for one input, '8,128;8,128' or "
    "'input_ids=8,128;attention_mask=8,128' for several, or the original \"[(224,224,3)]\" form"
)
# infercmp prints a shape as 224x224x3 and several inputs' shapes as 8x128_8x128 (the run
# label), so both read back as written: 'x' separates dimensions like ',', and '_' inputs
# like ';' (only in the unnamed form, where no input name can hold a '_').
_DIM_SEPARATOR = re.compile(r"[,xX]")
_INPUT_SEPARATOR = re.compile(r"[;_]")


@dataclass(frozen=True)
class Experiment:
    """One `--shape`: the raw example shape of every input, in config order."""

    shapes: tuple[tuple[int, ...], ...]

    @property
    def label(self) -> str:
        return "_".join("x".join(str(d) for d in shape) for shape in self.shapes)


def _dims(text: str, spec: str) -> tuple[int, ...]:
    parts = [p.strip() for p in _DIM_SEPARATOR.split(text.strip().strip("()[]"))]
    if not any(parts):
        raise InfercmpError(f"--shape '{spec}': empty shape; {_FORMS}")
    if not all(parts):  # '32,,32,3' is a typo, not the 3-dimensional 32,32,3
        raise InfercmpError(f"--shape '{spec}': '{text.strip()}' has an empty dimension; {_FORMS}")
    dims = []
    for part in parts:
        if not re.fullmatch(r"[+-]?\d+", part):
            raise InfercmpError(f"--shape '{spec}': '{part}' is not an integer; {_FORMS}")
        try:
            value = int(part)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise InfercmpError(
                f"--shape '{spec[:60]}...': a dimension of {len(part)} digits is too large"
            ) from None
        if value <= 0:
            raise InfercmpError(f"--shape '{spec}': dimension {value} must be positive")
        dims.append(value)
    return tuple(dims)


def _literal(spec: str) -> list[tuple[int, ...]] | None:
    """The research script's `[(224,224,3)]` form (or one bare `[224,224,3]`), read without eval."""
    try:
        value = ast.literal_eval(spec)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(d, int) for d in value):
        value = [value]
    shapes = []
    for shape in value:
        # bool is an int subclass, but `True` is no dimension
        if not isinstance(shape, tuple | list) or any(type(d) is not int for d in shape):
            return None
        shapes.append(_dims(",".join(map(str, shape)), spec))
    return shapes


def parse_shape(spec: str, config: ModelConfig) -> Experiment:
    """Parse one `--shape` value against `config`; the ranks must match the example shapes."""
    spec = spec.strip()
    if not spec:
        raise InfercmpError(f"--shape is empty; {_FORMS}")
    names = config.input_names
    shapes: list[tuple[int, ...]] | None = None
    if spec.startswith("["):
        shapes = _literal(spec)
        if shapes is None:
            raise InfercmpError(f"--shape '{spec}' is not a list of integer tuples; {_FORMS}")
    elif "=" in spec:
        named: dict[str, tuple[int, ...]] = {}
        for part in spec.split(";"):
            name, sep, dims = part.partition("=")
            name = name.strip()
            if not sep:
                raise InfercmpError(
                    f"--shape '{spec}': '{part.strip()}' has no input name; when one shape is "
                    "named, name them all: 'name=dims;name=dims'"
                )
            if name not in names:
                raise InfercmpError(
                    f"--shape '{spec}': '{name}' is not an input of model '{config.name}' "
                    f"(inputs: {', '.join(names)})"
                )
            if name in named:
                raise InfercmpError(f"--shape '{spec}': input '{name}' is given twice")
            named[name] = _dims(dims, spec)
        missing = [n for n in names if n not in named]
        if missing:
            raise InfercmpError(f"--shape '{spec}': no shape for input(s) {', '.join(missing)}")
        shapes = [named[n] for n in names]
    else:
        shapes = [_dims(part, spec) for part in _INPUT_SEPARATOR.split(spec)]
    if len(shapes) != len(names):
        raise InfercmpError(
            f"--shape '{spec}' gives {len(shapes)} shape(s) but model '{config.name}' has "
            f"{len(names)} input(s) ({', '.join(names)}); separate them with ';'"
        )
    for spec_in, shape in zip(config.inputs, shapes):
        want = len(spec_in.shapes.example)
        if len(shape) != want:
            raise InfercmpError(
                f"--shape '{spec}': input '{spec_in.name}' takes a rank-{want} example shape "
                f"like {','.join(map(str, spec_in.shapes.example))}, got {len(shape)} dimensions"
            )
        elements = math.prod(shape)
        if elements > MAX_EXAMPLE_ELEMENTS:
            raise InfercmpError(
                f"--shape '{spec}': input '{spec_in.name}' would hold {elements:,} elements, "
                f"more than the {MAX_EXAMPLE_ELEMENTS:,} an example may have; use a smaller shape"
            )
    return Experiment(tuple(shapes))


def default_experiment(config: ModelConfig) -> Experiment:
    """The config's own example shapes, used when no `--shape` is given."""
    return Experiment(tuple(tuple(i.shapes.example) for i in config.inputs))
