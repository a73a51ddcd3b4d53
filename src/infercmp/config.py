"""Model configuration files: pydantic models that validate the research script's YAML schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from infercmp.errors import InfercmpError

DYNAMIC = -1


class ConfigError(InfercmpError):
    """A model config that cannot be read or does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_dims(dims: list[int], what: str, allow_dynamic: bool) -> None:
    for i, d in enumerate(dims):
        if d == DYNAMIC and allow_dynamic:
            continue
        if d <= 0:
            allowed = "-1 (dynamic) or a positive size" if allow_dynamic else "a positive size"
            raise ValueError(f"{what}[{i}] is {d}; each dimension must be {allowed}")


class OptimizationShapes(_Strict):
    """The TensorRT optimisation profile of one input: the smallest, typical and largest shapes."""

    min: list[int]
    opt: list[int]
    max: list[int]


class InputShapes(_Strict):
    dims_names: list[str]
    example: list[int] = Field(description="shape of the raw example, before preprocessing")
    runtime: list[int] = Field(description="shape the model sees; -1 marks a dynamic axis")
    optimization: OptimizationShapes

    @model_validator(mode="after")
    def _consistent(self) -> InputShapes:
        rank = len(self.runtime)
        if len(self.dims_names) != rank:
            raise ValueError(
                f"dims_names has {len(self.dims_names)} names but runtime has rank {rank}"
            )
        _check_dims(self.example, "example", allow_dynamic=False)
        _check_dims(self.runtime, "runtime", allow_dynamic=True)
        profile = self.optimization
        for key in ("min", "opt", "max"):
            dims = getattr(profile, key)
            if len(dims) != rank:
                raise ValueError(
                    f"optimization.{key} has rank {len(dims)} but runtime has rank {rank}"
                )
            _check_dims(dims, f"optimization.{key}", allow_dynamic=False)
            for i, (d, r) in enumerate(zip(dims, self.runtime)):
                if r != DYNAMIC and d != r:
                    raise ValueError(
                        f"optimization.{key}[{i}] is {d} but runtime[{i}] is static {r}; "
                        "they must be equal"
                    )
        for i, (lo, mid, hi) in enumerate(zip(profile.min, profile.opt, profile.max)):
            if not lo <= mid <= hi:
                raise ValueError(
                    f"optimization needs min <= opt <= max, but dimension {i} "
                    f"({self.dims_names[i]}) has min {lo}, opt {mid}, max {hi}"
                )
        return self

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: n for i, (n, d) in enumerate(zip(self.dims_names, self.runtime)) if d == DYNAMIC}


class InputSpec(_Strict):
    name: str = Field(min_length=1)
    dtype_str: str
    shapes: InputShapes

    @field_validator("dtype_str")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        try:
            dtype = np.dtype(value)
        except TypeError:
            raise ValueError(
                f"unknown dtype '{value}'; use a numpy dtype name such as float32, float16, "
                "int64 or bool"
            ) from None
        if dtype.kind not in "biuf":
            raise ValueError(f"dtype '{value}' is not a numeric or boolean tensor type")
        return value

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.dtype_str)


class OutputShape(_Strict):
    runtime: list[int]
    dims_names: list[str]

    @model_validator(mode="after")
    def _consistent(self) -> OutputShape:
        if len(self.dims_names) != len(self.runtime):
            raise ValueError(
                f"dims_names has {len(self.dims_names)} names but runtime has rank "
                f"{len(self.runtime)}"
            )
        _check_dims(self.runtime, "runtime", allow_dynamic=True)
        return self


class OutputSpec(_Strict):
    name: str = Field(min_length=1)
    shape: OutputShape


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    inputs: list[InputSpec] = Field(min_length=1)
    outputs: list[OutputSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> ModelConfig:
        seen: set[str] = set()
        for tensor in [*self.inputs, *self.outputs]:
            if tensor.name in seen:
                raise ValueError(
                    f"tensor name '{tensor.name}' is used more than once; names must be unique "
                    "across inputs and outputs"
                )
            seen.add(tensor.name)
        return self

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]


def _field_path(loc: tuple[Any, ...], data: Any) -> str:
    """Render a pydantic location as `inputs[0](image).shapes.runtime`."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            try:
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    label += f" ({node['name']!r})"
            except (IndexError, KeyError, TypeError):
                node = None
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def format_validation_error(error: ValidationError, source: str, data: Any) -> str:
    lines = []
    for err in error.errors():
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field (check its spelling against the schema in docs/plugins.md)"
        lines.append(f"{source}: {_field_path(err['loc'], data)}: {message}")
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
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(f"{path}: YAML syntax error at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None
    return parse_config(data, str(path))
