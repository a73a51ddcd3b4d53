"""Model config validation: every rule's exact message, the reference config, and fuzzed configs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from config_strategies import invalid_configs, valid_configs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infercmp.workload.config import DTYPES, ConfigError, ModelConfig, load_config, parse_config

REPO = Path(__file__).resolve().parents[3]
RESNET50_CONFIG = REPO / "examples/models/resnet50/src/infercmp_resnet50/config.yaml"
# The original study's config (batch fixed at 1): it must keep loading exactly as it was.
STUDY_CONFIG = REPO / "examples/models/resnet50/src/infercmp_resnet50/study_config.yaml"
BUILTIN_CONFIGS = sorted((REPO / "src/infercmp/models").glob("*.yaml"))

RESNET50 = {
    "name": "resnet50",
    "inputs": [
        {
            "name": "image",
            "dtype_str": "float32",
            "shapes": {
                "dims_names": ["batch_size", "channels", "height", "width"],
                "example": [224, 224, 3],
                "runtime": [1, 3, -1, -1],
                "optimization": {
                    "min": [1, 3, 128, 128],
                    "opt": [1, 3, 256, 256],
                    "max": [1, 3, 512, 512],
                },
            },
        }
    ],
    "outputs": [
        {"name": "probs", "shape": {"runtime": [1, 1000], "dims_names": ["batch_size", "probs"]}}
    ],
}

IMAGE = "inputs[0] ('image')"
PROBS = "outputs[0] ('probs')"


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def problem(tmp_path: Path, data) -> str:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).replace(str(path), "FILE")


def edited(**changes) -> dict:
    """The reference config with `changes` applied: keys are dotted paths, list items by index."""
    data = copy.deepcopy(RESNET50)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()


# --- the reference configs load unchanged ---------------------------------------------------


def test_study_resnet50_config_loads_unchanged():
    config = load_config(STUDY_CONFIG)
    assert config.model_dump() == RESNET50
    image = config.inputs[0]
    assert image.dtype.name == "float32"
    assert image.shapes.dynamic_axes == {2: "height", 3: "width"}
    assert config.input_names == ["image"] and config.output_names == ["probs"]


@pytest.mark.parametrize("path", BUILTIN_CONFIGS, ids=lambda p: p.name)
def test_builtin_configs_load(path):
    assert isinstance(load_config(path), ModelConfig)


def test_config_is_frozen_data():
    config = parse_config(RESNET50)
    with pytest.raises(ValueError):
        config.name = "other"


# --- one test per validation rule, with the exact message -----------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"inputs__0__shapes__dims_names": ["batch_size", "channels", "height"]},
            f"FILE: {IMAGE}.shapes.dims_names: has 3 names but runtime has rank 4",
        ),
        (
            {"outputs__0__shape__dims_names": ["batch_size"]},
            f"FILE: {PROBS}.shape.dims_names: has 1 names but runtime has rank 2",
        ),
    ],
    ids=["input", "output"],
)
def test_dims_names_length_must_equal_runtime_rank(tmp_path, changes, message):
    assert problem(tmp_path, edited(**changes)) == message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"inputs__0__shapes__runtime": [1, 3, 0, -1]},
            f"FILE: {IMAGE}.shapes.runtime[2]: is 0; each dimension must be -1 (dynamic) or a "
            "positive size",
        ),
        (
            {"inputs__0__shapes__runtime": [1, -2, -1, -1]},
            f"FILE: {IMAGE}.shapes.runtime[1]: is -2; each dimension must be -1 (dynamic) or a "
            "positive size",
        ),
        (
            {"outputs__0__shape__runtime": [1, -5]},
            f"FILE: {PROBS}.shape.runtime[1]: is -5; each dimension must be -1 (dynamic) or a "
            "positive size",
        ),
        (
            {"inputs__0__shapes__example": [224, -1, 3]},
            f"FILE: {IMAGE}.shapes.example[1]: is -1; each dimension must be a positive size",
        ),
        (
            {"inputs__0__shapes__optimization__max": [1, 3, -1, 512]},
            f"FILE: {IMAGE}.shapes.optimization.max[2]: is -1; each dimension must be a "
            "positive size",
        ),
        (
            {"inputs__0__shapes__runtime": [1, 3, 1.5, -1]},
            f"FILE: {IMAGE}.shapes.runtime[2]: Input should be a valid integer",
        ),
        (
            {"inputs__0__shapes__runtime": [1, "3", -1, -1]},
            f"FILE: {IMAGE}.shapes.runtime[1]: Input should be a valid integer",
        ),
    ],
    ids=["zero", "negative", "output", "example-dynamic", "profile-dynamic", "float", "string"],
)
def test_dims_must_be_minus_one_or_positive_integers(tmp_path, changes, message):
    assert problem(tmp_path, edited(**changes)) == message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"inputs__0__shapes__optimization__min": [1, 3, 300, 128]},
            f"FILE: {IMAGE}.shapes.optimization: needs min <= opt <= max, but dimension 2 "
            "(height) has min 300, opt 256, max 512",
        ),
        (
            {"inputs__0__shapes__optimization__max": [1, 3, 512, 200]},
            f"FILE: {IMAGE}.shapes.optimization: needs min <= opt <= max, but dimension 3 "
            "(width) has min 128, opt 256, max 200",
        ),
        (
            {"inputs__0__shapes__optimization__opt": [1, 3, 256]},
            f"FILE: {IMAGE}.shapes.optimization.opt: has rank 3 but runtime has rank 4",
        ),
        (
            {"inputs__0__shapes__optimization__max": [1, 3, 512, 512, 1]},
            f"FILE: {IMAGE}.shapes.optimization.max: has rank 5 but runtime has rank 4",
        ),
        (
            {"inputs__0__shapes__optimization__min": [2, 3, 128, 128]},
            f"FILE: {IMAGE}.shapes.optimization.min[0]: is 2 but runtime[0] is static 1; they "
            "must be equal",
        ),
        (
            {"inputs__0__shapes__optimization__opt": [1, 4, 256, 256]},
            f"FILE: {IMAGE}.shapes.optimization.opt[1]: is 4 but runtime[1] is static 3; they "
            "must be equal",
        ),
    ],
    ids=["min>opt", "opt>max", "opt-rank", "max-rank", "min-static", "opt-static"],
)
def test_optimization_profile(tmp_path, changes, message):
    assert problem(tmp_path, edited(**changes)) == message


@pytest.mark.parametrize("dtype", ["float33", "float", "bfloat16", "complex64", "object", ""])
def test_dtype_must_be_known(tmp_path, dtype):
    assert problem(tmp_path, edited(inputs__0__dtype_str=dtype)) == (
        f"FILE: {IMAGE}.dtype_str: unknown dtype {dtype!r}; use one of "
        "bool, uint8, int8, int16, int32, int64, float16, float32, float64"
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_listed_dtype_loads(dtype):
    config = parse_config(edited(inputs__0__dtype_str=dtype))
    assert config.inputs[0].dtype.name == dtype


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"inputs": []}, "FILE: inputs: a model needs at least one input"),
        ({"outputs": []}, "FILE: outputs: a model needs at least one output"),
        ({"inputs": _DELETE}, "FILE: inputs: Field required"),
        ({"outputs": _DELETE}, "FILE: outputs: Field required"),
    ],
    ids=["no-inputs", "no-outputs", "inputs-missing", "outputs-missing"],
)
def test_at_least_one_input_and_one_output(tmp_path, changes, message):
    assert problem(tmp_path, edited(**changes)) == message


def test_names_unique_across_inputs_and_outputs(tmp_path):
    assert problem(tmp_path, edited(outputs__0__name="image")) == (
        "FILE: outputs[0] ('image').name: 'image' is already the name of inputs[0]; names must "
        "be unique across inputs and outputs"
    )


def test_names_unique_among_inputs(tmp_path):
    data = edited()
    data["inputs"].append(copy.deepcopy(data["inputs"][0]))
    assert problem(tmp_path, data) == (
        "FILE: inputs[1] ('image').name: 'image' is already the name of inputs[0]; names must "
        "be unique across inputs and outputs"
    )


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    text = "name: resnet50\ninputs:\n  - name: image\n    dtype_str: [float32\n"
    assert problem(tmp_path, text) == (
        "FILE: YAML syntax error at line 5, column 1: expected ',' or ']', but got '<stream end>'"
    )


def test_yaml_bad_indentation_gives_line_and_column(tmp_path):
    text = "name: resnet50\ninputs:\n  - name: image\n   dtype_str: float32\n"
    assert problem(tmp_path, text) == (
        "FILE: YAML syntax error at line 4, column 4: expected <block end>, but found "
        "'<block mapping start>'"
    )


def test_yaml_duplicate_key_is_an_error_not_silently_overwritten(tmp_path):
    text = STUDY_CONFIG.read_text() + "name: resnet152\n"
    assert problem(tmp_path, text) == "FILE: YAML syntax error at line 19, column 1: " + (
        "duplicate key 'name'"
    )


def test_yaml_python_tags_are_refused(tmp_path):
    text = "!!python/object/apply:os.system ['true']\n"
    message = problem(tmp_path, text)
    assert message.startswith("FILE: YAML syntax error at line 1, column 1: could not determine")


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"batch": 1}, "batch"),
        ({"inputs__0__dtype": "float32"}, f"{IMAGE}.dtype"),
        ({"inputs__0__shapes__optimisation": {}}, f"{IMAGE}.shapes.optimisation"),
        (
            {"inputs__0__shapes__optimization__mid": [1, 3, 1, 1]},
            f"{IMAGE}.shapes.optimization.mid",
        ),
        ({"outputs__0__shape__dtype_str": "float32"}, f"{PROBS}.shape.dtype_str"),
    ],
    ids=["top", "input", "shapes", "profile", "output"],
)
def test_unknown_fields(tmp_path, changes, path):
    assert problem(tmp_path, edited(**changes)) == (
        f"FILE: {path}: unknown field (check its spelling against the schema in docs/plugins.md)"
    )


def test_every_problem_is_reported_one_per_line(tmp_path):
    data = edited(
        inputs__0__dtype_str="float",
        inputs__0__shapes__example=[224, 0.5, 3],
        outputs=[],
        extra=True,
    )
    assert problem(tmp_path, data).splitlines() == [
        f"FILE: {IMAGE}.dtype_str: unknown dtype 'float'; use one of bool, uint8, int8, int16, "
        "int32, int64, float16, float32, float64",
        f"FILE: {IMAGE}.shapes.example[1]: Input should be a valid integer",
        "FILE: outputs: a model needs at least one output",
        "FILE: extra: unknown field (check its spelling against the schema in docs/plugins.md)",
    ]


def test_top_level_must_be_a_mapping(tmp_path):
    assert problem(tmp_path, "- a\n- b\n") == "FILE: expected a mapping at the top level, got list"
    assert problem(tmp_path, "") == "FILE: expected a mapping at the top level, got NoneType"


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^.*nope\.yaml: no such file$"):
        load_config(tmp_path / "nope.yaml")


def test_parse_config_names_its_source():
    with pytest.raises(ConfigError) as info:
        parse_config(edited(name=""), "plugin foo")
    assert str(info.value) == "plugin foo: name: String should have at least 1 character"


# --- generated configs ----------------------------------------------------------------------


def _assert_clean(message: str, source: str) -> None:
    assert message
    for line in message.splitlines():
        assert line.startswith(f"{source}: "), line
        assert "Traceback" not in line and "pydantic" not in line and "errors.pydantic" not in line


# No example database: the tests must not leave a .hypothesis folder in the checkout.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(valid_configs())
def test_generated_valid_configs_load(data):
    assert parse_config(data, "gen").model_dump() == data


@FUZZ
@given(valid_configs())
def test_generated_valid_configs_load_from_yaml(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("gen") / "model.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_config(path).model_dump() == data


@FUZZ
@given(invalid_configs())
def test_generated_invalid_configs_raise_one_clean_config_error(data):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "gen.yaml")
    _assert_clean(str(info.value), "gen.yaml")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(sorted(RESNET50) + ["shapes", "runtime"]), children)
    ),
    max_leaves=20,
)


@FUZZ
@given(json_values)
def test_arbitrary_data_raises_only_config_error(data):
    try:
        parse_config(data, "junk")
    except ConfigError as exc:
        _assert_clean(str(exc), "junk")


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("junk") / "model.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        _assert_clean(str(exc), str(path))
