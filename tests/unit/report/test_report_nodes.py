"""The report groups and filters a distributed run's combinations by the node they ran on."""

from __future__ import annotations

import pytest
from synthetic_runs import Combo, edit_results, make_run

from infercmp.core.errors import InfercmpError
from infercmp.report import load_runs, summary_rows
from infercmp.report.runs import keep_nodes

NODES = {
    "pytorch": {"hostname": "node-a", "gpu_name": "NVIDIA H200", "gpu_uuid": "GPU-a"},
    "onnxruntime": {"hostname": "node-b", "gpu_name": "NVIDIA A100", "gpu_uuid": "GPU-b"},
}


@pytest.fixture
def distributed_run(tmp_path):
    run = make_run(
        tmp_path,
        [Combo("pytorch", device="cuda", median_ms=2.0), Combo("onnxruntime", device="cuda")],
        host="driver",
        gpus=[],
    )
    edit_results(run, lambda item: item.update(node=NODES[item["engine"]]))
    return run


def test_rows_and_labels_name_the_node_each_combination_ran_on(distributed_run):
    (run,) = load_runs([distributed_run])
    rows = {r["engine"]: r for r in summary_rows([run])}
    assert (rows["pytorch"]["host"], rows["pytorch"]["gpu"]) == ("node-a", "NVIDIA H200")
    assert (rows["onnxruntime"]["host"], rows["onnxruntime"]["gpu"]) == ("node-b", "NVIDIA A100")
    labels = {c.engine: c.label for c in run.combinations}
    assert labels["pytorch"].endswith("@ node-a (NVIDIA H200)")


def test_report_node_keeps_one_gpu_type_and_says_what_there_is(distributed_run):
    runs = load_runs([distributed_run])
    keep_nodes(runs, "h200")
    assert [c.engine for c in runs[0].combinations] == ["pytorch"]
    with pytest.raises(InfercmpError, match=r"--node 'V100': no combination ran on a matching"):
        keep_nodes(load_runs([distributed_run]), "V100")
