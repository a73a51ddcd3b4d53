"""Model configuration files: pydantic models that validate the research script's YAML schema."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

DYNAMIC = -1

# The dtypes every engine can feed (numpy has no bfloat16).
DTYPES = (
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
)

# Strict: a YAML `1.5`, `"3"` or `true` is a mistake in a shape, not something to coerce.
Dim = Annotated[int, Strict()]


class ConfigError(InfercmpError):
    """A model config that cannot be read or does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldProblem(ValueError):
    """A validator's complaint about one field below the model it validates.

    Pydantic reports a model validator's error at the model's own location; `loc` (relative
    to that model, in pydantic's form) lets the message point at the exact field.
    """

    def __init__(self, loc: tuple[str | int, ...], reason: str) -> None:
        super().__init__(reason)
        self.loc = loc


def _check_dims(dims: list[int], loc: tuple[str, ...], allow_dynamic: bool) -> None:
    for i, d in enumerate(dims):
        if d == DYNAMIC and allow_dynamic:
            continue
        if d <= 0:
            allowed = "-1 (dynamic) or a positive size" if allow_dynamic else "a positive size"
            raise FieldProblem((*loc, i), f"is {d}; each dimension must be {allowed}")


class OptimizationShapes(_Strict):
    """The TensorRT optimisation profile of one input: the smallest, typical and largest shapes."""

    min: list[Dim]
    opt: list[Dim]
    max: list[Dim]


class InputShapes(_Strict):
    dims_names: list[str]
    example: list[Dim] = Field(description="shape of the raw example, before preprocessing")
    runtime: list[Dim] = Field(description="shape the model sees; -1 marks a dynamic axis")
    optimization: OptimizationShapes

    @model_validator(mode="after")
    def _consistent(self) -> InputShapes:
        rank = len(self.runtime)
        if len(self.dims_names) != rank:
            raise FieldProblem(
                ("dims_names",), f"has {len(self.dims_names)} names but runtime has rank {rank}"
            )
        _check_dims(self.example, ("example",), allow_dynamic=False)
        _check_dims(self.runtime, ("runtime",), allow_dynamic=True)
        profile = self.optimization
        for key in ("min", "opt", "max"):
            dims = getattr(profile, key)
            if len(dims) != rank:
                raise FieldProblem(
                    ("optimization", key), f"has rank {len(dims)} but runtime has rank {rank}"
                )
            _check_dims(dims, ("optimization", key), allow_dynamic=False)
            for i, (d, r) in enumerate(zip(dims, self.runtime)):
                if r != DYNAMIC and d != r:
                    raise FieldProblem(
                        ("optimization", key, i),
                        f"is {d} but runtime[{i}] is static {r}; they must be equal",
                    )
        for i, (lo, mid, hi) in enumerate(zip(profile.min, profile.opt, profile.max)):
            if not lo <= mid <= hi:
                raise FieldProblem(
                    ("optimization",),
                    f"needs min <= opt <= max, but dimension {i} ({self.dims_names[i]}) has "
                    f"min {lo}, opt {mid}, max {hi}",
                )
        return self

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """Each axis marked dynamic (-1) in `runtime`, with its name."""
        return {i: n for i, (n, d) in enumerate(zip(self.dims_names, self.runtime)) if d == DYNAMIC}


class InputSpec(_Strict):
    name: str = Field(min_length=1)
    dtype_str: str
    shapes: InputShapes

    @field_validator("dtype_str")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"unknown dtype {value!r}; use one of {', '.join(DTYPES)}")
        return value

    @property
    def dtype(self) -> np.dtype:
        """The input's numpy dtype."""
        return np.dtype(self.dtype_str)


class OutputShape(_Strict):
    runtime: list[Dim]
    dims_names: list[str]

    @model_validator(mode="after")
    def _consistent(self) -> OutputShape:
        if len(self.dims_names) != len(self.runtime):
            raise FieldProblem(
                ("dims_names",),
                f"has {len(self.dims_names)} names but runtime has rank {len(self.runtime)}",
            )
        _check_dims(self.runtime, ("runtime",), allow_dynamic=True)
        return self


class OutputSpec(_Strict):
    name: str = Field(min_length=1)
    shape: OutputShape


class AccuracyConfig(_Strict):
    """How accuracy is judged for this model (`bench --accuracy`, int8 calibration).

    `primary` names the task metric the table shows, one of the keys the plugin's
    `evaluate()` returns (None: no task metric; agreement with PyTorch fp32 is shown);
    `direction` says whether higher (max) or lower (min) is better.
    """

    primary: str | None = Field(None, min_length=1)
    direction: Literal["max", "min"] = "max"
    # Dataset samples int8 calibrates on (taken first; accuracy is measured on the others).
    calibration_samples: int = Field(128, gt=0)
    # What --accuracy without a number measures at most.
    max_samples: int = Field(1000, gt=0)


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    inputs: list[InputSpec] = Field(min_length=1)
    outputs: list[OutputSpec] = Field(min_length=1)
    # Optional (None: the defaults); left out of dumps when absent, so a config without it
    # dumps as it always has.
    accuracy: AccuracyConfig | None = None

    @model_serializer(mode="wrap")
    def _without_absent_accuracy(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("accuracy", 0) is None:
            del data["accuracy"]
        return data

    @property
    def accuracy_settings(self) -> AccuracyConfig:
        """The config's `accuracy` section, or its defaults when it has none."""
        return self.accuracy or AccuracyConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> ModelConfig:
        seen: dict[str, str] = {}
        tensors: list[tuple[str, int, InputSpec | OutputSpec]] = [
            ("inputs", i, t) for i, t in enumerate(self.inputs)
        ]
        tensors += [("outputs", i, t) for i, t in enumerate(self.outputs)]
        for group, index, tensor in tensors:
            if tensor.name in seen:
                raise FieldProblem(
                    (group, index, "name"),
                    f"{tensor.name!r} is already the name of {seen[tensor.name]}; names must "
                    "be unique across inputs and outputs",
                )
            seen[tensor.name] = f"{group}[{index}]"
        return self

    @property
    def input_names(self) -> list[str]:
        """The inputs' names, in config order."""
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        """The outputs' names, in config order."""
        return [o.name for o in self.outputs]


def _field_path(loc: tuple[Any, ...], data: Any) -> str:
    """Render a pydantic location as `inputs[0] ('image').shapes.runtime`.

    A list item that has a `name` shows it, so the reader need not count entries.
    """
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int) and isinstance(node, list):
            label = f"[{item}]"
            node = node[item] if 0 <= item < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                label += f" ({node['name']!r})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


# Messages in the words of the schema where pydantic's generic ones would puzzle a model author.
_SCHEMA_MESSAGES = {
    ("inputs", "too_short"): "a model needs at least one input",
    ("outputs", "too_short"): "a model needs at least one output",
}


def format_validation_error(error: ValidationError, source: str, data: Any) -> str:
    """One line per problem: `source: field.path: reason`."""
    lines = []
    for err in error.errors():
        loc = tuple(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        problem = err.get("ctx", {}).get("error")
        if isinstance(problem, FieldProblem):
            loc += problem.loc
        elif err["type"] == "extra_forbidden":
            message = "unknown field (check its spelling against the schema in docs/plugins.md)"
        elif err["loc"] and (str(err["loc"][-1]), err["type"]) in _SCHEMA_MESSAGES:
            message = _SCHEMA_MESSAGES[str(err["loc"][-1]), err["type"]]
        lines.append(f"{source}: {_field_path(loc, data)}: {message}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> ModelConfig:
    """Validate already-parsed YAML/JSON data, naming `source` in any error."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, data)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path) -> ModelConfig:
    """Read and validate one YAML model config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(f"{path}: YAML syntax error at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {' '.join(str(exc).split())}") from None
    return parse_config(data, str(path))
