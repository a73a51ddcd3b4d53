"""Hypothesis strategies for model configs: valid ones, and each broken in one way; shared by
test_config (the config schema) and test_reliability_input (what bench does with them)."""

from __future__ import annotations

import copy

from hypothesis import strategies as st

from infercmp.workload.config import DTYPES

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)


@st.composite
def input_specs(draw, name: str) -> dict:
    rank = draw(st.integers(0, 4))
    runtime = draw(st.lists(st.sampled_from([-1, 1, 2, 3, 7, 64]), min_size=rank, max_size=rank))
    profile: dict[str, list[int]] = {"min": [], "opt": [], "max": []}
    for dim in runtime:
        if dim == -1:
            triple = sorted(draw(st.lists(st.integers(1, 4096), min_size=3, max_size=3)))
        else:
            triple = [dim] * 3
        for key, value in zip(("min", "opt", "max"), triple):
            profile[key].append(value)
    return {
        "name": name,
        "dtype_str": draw(st.sampled_from(DTYPES)),
        "shapes": {
            "dims_names": draw(st.lists(names, min_size=rank, max_size=rank)),
            "example": draw(st.lists(st.integers(1, 1024), max_size=4)),
            "runtime": runtime,
            "optimization": profile,
        },
    }


@st.composite
def output_specs(draw, name: str) -> dict:
    runtime = draw(st.lists(st.sampled_from([-1, 1, 10, 1000]), max_size=4))
    dims_names = draw(st.lists(names, min_size=len(runtime), max_size=len(runtime)))
    return {"name": name, "shape": {"runtime": runtime, "dims_names": dims_names}}


@st.composite
def valid_configs(draw) -> dict:
    n_in, n_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    tensor_names = draw(st.lists(names, min_size=n_in + n_out, max_size=n_in + n_out, unique=True))
    return {
        "name": draw(names),
        "inputs": [draw(input_specs(n)) for n in tensor_names[:n_in]],
        "outputs": [draw(output_specs(n)) for n in tensor_names[n_in:]],
    }


def _break(data: dict, draw) -> dict:
    """One mutation that each validation rule must catch."""
    data = copy.deepcopy(data)
    spec = draw(st.sampled_from(data["inputs"]))
    shapes = spec["shapes"]
    out = draw(st.sampled_from(data["outputs"]))
    rank = len(shapes["runtime"])
    kind = draw(
        st.sampled_from(
            [
                "dims_names",
                "output_dims_names",
                "bad_dim",
                "profile_order",
                "profile_rank",
                "dtype",
                "no_inputs",
                "no_outputs",
                "duplicate_name",
                "unknown_field",
                "wrong_type",
                "missing_field",
            ]
        )
    )
    if kind == "dims_names":
        shapes["dims_names"] = shapes["dims_names"] + ["extra"]
    elif kind == "output_dims_names":
        out["shape"]["dims_names"] = out["shape"]["dims_names"] + ["extra"]
    elif kind == "bad_dim":
        field = draw(st.sampled_from(["runtime", "example"]))
        bad = draw(st.integers(-1000, 0).filter(lambda d: field == "example" or d != -1))
        shapes[field] = [*shapes[field], bad]
    elif kind == "profile_order" and rank:
        axis = draw(st.integers(0, rank - 1))
        key = draw(st.sampled_from(["min", "opt"]))
        above = {"min": "opt", "opt": "max"}[key]
        shapes["optimization"][key][axis] = shapes["optimization"][above][axis] + 1
    elif kind == "profile_rank":
        key = draw(st.sampled_from(["min", "opt", "max"]))
        shapes["optimization"][key] = [*shapes["optimization"][key], 1]
    elif kind == "dtype":
        spec["dtype_str"] = draw(st.text(max_size=10).filter(lambda s: s not in DTYPES))
    elif kind == "no_inputs":
        data["inputs"] = []
    elif kind == "no_outputs":
        data["outputs"] = []
    elif kind == "duplicate_name":
        out["name"] = spec["name"]
    elif kind == "unknown_field":
        target = draw(st.sampled_from([data, spec, shapes, shapes["optimization"], out]))
        target[draw(names.map(lambda n: "x_" + n))] = 1
    elif kind == "wrong_type":
        shapes["runtime"] = [*shapes["runtime"], draw(st.sampled_from([1.5, "8", True, None]))]
    else:
        del spec[draw(st.sampled_from(sorted(spec)))]
    if kind == "profile_order" and not rank:
        data["inputs"] = []
    return data


@st.composite
def invalid_configs(draw) -> dict:
    return _break(draw(valid_configs()), draw)
