"""`--shape` parsing: every accepted form, and one clear line for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from infercmp.core.errors import InfercmpError
from infercmp.workload.config import load_config
from infercmp.workload.shapes import Experiment, default_experiment, parse_shape

MODELS = Path(__file__).resolve().parents[3] / "src" / "infercmp" / "models"
FORMS = (
    "use '224,224,3' or '224x224x3' for one input, '8,128;8,128' or "
    "'input_ids=8,128;attention_mask=8,128' for several, or the original \"[(224,224,3)]\" form"
)


@pytest.fixture(scope="module")
def image():
    """One input, example shape rank 3 (HWC)."""
    return load_config(MODELS / "tiny_cnn.yaml")


@pytest.fixture(scope="module")
def encoder():
    """Two inputs, input_ids and attention_mask, example shapes of rank 2."""
    return load_config(MODELS / "tiny_encoder.yaml")


def error(spec, config) -> str:
    with pytest.raises(InfercmpError) as info:
        parse_shape(spec, config)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "spec",
    [
        "224,224,3",
        " 224, 224, 3 ",
        "(224,224,3)",
        "[(224,224,3)]",
        "[(224, 224, 3)]",
        "[224,224,3]",
        "224x224x3",  # how infercmp prints a shape
        " 224 x 224 X 3 ",
    ],
)
def test_single_input_forms(image, spec):
    assert parse_shape(spec, image) == Experiment(((224, 224, 3),))


@pytest.mark.parametrize(
    "spec",
    [
        "8,128;8,128",
        "input_ids=8,128;attention_mask=8,128",
        "attention_mask=8,128;input_ids=8,128",
        " input_ids = 8,128 ; attention_mask = 8,128 ",
        "[(8,128),(8,128)]",
        "[[8,128],[8,128]]",
        "8x128;8x128",
        "8x128_8x128",  # the run label infercmp prints
        "input_ids=8x128;attention_mask=8x128",
    ],
)
def test_several_input_forms(encoder, spec):
    assert parse_shape(spec, encoder) == Experiment(((8, 128), (8, 128)))


def test_named_shapes_follow_config_order(encoder):
    experiment = parse_shape("attention_mask=4,64;input_ids=8,128", encoder)
    assert experiment.shapes == ((8, 128), (4, 64))
    assert experiment.label == "8x128_4x64"


def test_default_experiment_is_the_config_example(image, encoder):
    assert default_experiment(image) == Experiment(((32, 32, 3),))
    assert default_experiment(encoder).label == "2x16_2x16"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "224,224",
            "--shape '224,224': input 'image' takes a rank-3 example shape like 32,32,3, "
            "got 2 dimensions",
        ),
        (
            "[(224,224,3,1)]",
            "--shape '[(224,224,3,1)]': input 'image' takes a rank-3 example shape like 32,32,3, "
            "got 4 dimensions",
        ),
        ("224,22a,3", f"--shape '224,22a,3': '22a' is not an integer; {FORMS}"),
        ("224,2.5,3", f"--shape '224,2.5,3': '2.5' is not an integer; {FORMS}"),
        ("224,0,3", "--shape '224,0,3': dimension 0 must be positive"),
        ("32,,32,3", f"--shape '32,,32,3': '32,,32,3' has an empty dimension; {FORMS}"),
        ("32,32,3,", f"--shape '32,32,3,': '32,32,3,' has an empty dimension; {FORMS}"),
        ("32xx32x3", f"--shape '32xx32x3': '32xx32x3' has an empty dimension; {FORMS}"),
        ("224,-1,3", "--shape '224,-1,3': dimension -1 must be positive"),
        ("[(224,0,3)]", "--shape '[(224,0,3)]': dimension 0 must be positive"),
        ("", f"--shape is empty; {FORMS}"),
        (",", f"--shape ',': empty shape; {FORMS}"),
        (
            "[(224,2.5,3)]",
            f"--shape '[(224,2.5,3)]' is not a list of integer tuples; {FORMS}",
        ),
        ("[(224,True,3)]", f"--shape '[(224,True,3)]' is not a list of integer tuples; {FORMS}"),
        ("[]", f"--shape '[]' is not a list of integer tuples; {FORMS}"),
        ("[(224,224,3)", f"--shape '[(224,224,3)' is not a list of integer tuples; {FORMS}"),
        (
            "[__import__('os')]",
            f"--shape '[__import__('os')]' is not a list of integer tuples; {FORMS}",
        ),
        (
            "32,32,3;32,32,3",
            "--shape '32,32,3;32,32,3' gives 2 shape(s) but model 'tiny-cnn' has 1 input(s) "
            "(image); separate them with ';'",
        ),
        (
            "img=32,32,3",
            "--shape 'img=32,32,3': 'img' is not an input of model 'tiny-cnn' (inputs: image)",
        ),
    ],
)
def test_single_input_mistakes(image, spec, message):
    assert error(spec, image) == message


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "8,128",
            "--shape '8,128' gives 1 shape(s) but model 'tiny-encoder' has 2 input(s) "
            "(input_ids, attention_mask); separate them with ';'",
        ),
        (
            "[(8,128)]",
            "--shape '[(8,128)]' gives 1 shape(s) but model 'tiny-encoder' has 2 input(s) "
            "(input_ids, attention_mask); separate them with ';'",
        ),
        (
            "input_ids=8,128",
            "--shape 'input_ids=8,128': no shape for input(s) attention_mask",
        ),
        (
            "input_ids=8,128;input_ids=8,128",
            "--shape 'input_ids=8,128;input_ids=8,128': input 'input_ids' is given twice",
        ),
        (
            "input_ids=8,128;mask=8,128",
            "--shape 'input_ids=8,128;mask=8,128': 'mask' is not an input of model "
            "'tiny-encoder' (inputs: input_ids, attention_mask)",
        ),
        (
            "input_ids=8,128;8,128",
            "--shape 'input_ids=8,128;8,128': '8,128' has no input name; when one shape is "
            "named, name them all: 'name=dims;name=dims'",
        ),
        (
            "8,128;8",
            "--shape '8,128;8': input 'attention_mask' takes a rank-2 example shape like 2,16, "
            "got 1 dimensions",
        ),
        (
            "input_ids=8,x;attention_mask=8,128",
            f"--shape 'input_ids=8,x;attention_mask=8,128': '8,x' has an empty dimension; {FORMS}",
        ),
        ("8,128;", f"--shape '8,128;': empty shape; {FORMS}"),
        ("8,128;;8,128", f"--shape '8,128;;8,128': empty shape; {FORMS}"),
    ],
)
def test_several_input_mistakes(encoder, spec, message):
    assert error(spec, encoder) == message
