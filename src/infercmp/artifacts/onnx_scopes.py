"""Which PyTorch module each node of an exported ONNX graph came from.

The dynamo exporter records on every node the module path it was traced in
(`metadata_props["pkg.torch.onnx.name_scopes"]`: `['', 'layer1', 'layer1.0', 'layer1.0.bn1',
'<fx node>']`); the TorchScript exporter encodes it in the node's name
(`/layer1/layer1.0/conv1/Conv`). Quantization excludes layers by module path through this map
(ONNX Runtime's `nodes_to_exclude`, NNCF's `IgnoredScope(names)`), and `debug-precision` names a
node by its module. A node the exporter gave no module is the model's own top level (`""`).

An optimisation that merges nodes keeps one node's metadata: after BatchNorm is folded into the
preceding Conv, the Conv carries the BatchNorm's path (`layer1.0.bn1`) and the rewriter's rule
name; `NodeScope.fused_by` says so, and an exclusion by the conv's own path then also matches
the parent (`layer1.0`), never the wrong sibling. The merged node's parameters keep their
names (`module.layer1.0.conv1.weight`): `NodeScope.merged` names the modules whose
parameters such a node reads besides its own path's (the conv folded into `layer1.0.bn1`), so
a profile can say that this node is `conv1` and `bn1` together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
REWRITE_RULE = "pkg.onnxscript.rewriter.rule_name"
#: The wrapper infercmp's export puts around the plugin's module (onnx_export's InConfigOrder
#: holds it as `module`): every scope of that export starts with it, the user's paths do not.
EXPORT_WRAPPER = "module"
#: The scope torch.export gives a node that has no module stack: the top level.
NO_MODULE = "_empty_nn_module_stack_from_metadata_hook"


@dataclass(frozen=True)
class NodeScope:
    """Where one ONNX node came from: its module path ("" for the top level) and, when an
    optimisation merged it with other nodes, the rule that did (None: not merged)."""

    path: str
    fused_by: str | None = None
    merged: tuple[str, ...] = ()  # merged nodes only: the modules of the parameters it reads

    def at_depth(self, depth: int) -> str:
        """The path cut to `depth` dotted parts (`layer1.0.conv1` at 1: `layer1`)."""
        return ".".join(self.path.split(".")[:depth]) if self.path else ""


def node_scopes(model: onnx.ModelProto) -> dict[str, NodeScope]:
    """Every named node of the main graph -> its `NodeScope`, in the user's terms: without
    the export wrapper's `module.` prefix (when every node with a module carries it, as in
    infercmp's own export), torch.export's "no module" placeholder read as the top level."""
    raw: dict[str, tuple[str, str | None, list[str]]] = {}
    initializers = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        path = _dynamo_path(props.get(NAME_SCOPES))
        if path is None:
            path = _torchscript_path(node.name)
        rule = props.get(REWRITE_RULE)
        owners = [_owner(i) for i in node.input if rule and i in initializers]
        raw[node.name] = ("" if path.startswith(NO_MODULE) else path, rule, owners)
    paths = [path for path, _, _ in raw.values() if path]
    wrapped = bool(paths) and all(under(p, [EXPORT_WRAPPER]) for p in paths)

    def user(path: str) -> str:
        return _unwrapped(path) if wrapped else path

    scopes = {}
    for name, (path, rule, owners) in raw.items():
        merged = [
            user(o)
            for o in owners
            if o and o != path and (not wrapped or under(o, [EXPORT_WRAPPER]))
        ]
        scopes[name] = NodeScope(user(path), rule, tuple(dict.fromkeys(merged)))
    return scopes


def _owner(initializer: str) -> str:
    """The module a parameter belongs to (`module.conv1.weight` -> `module.conv1`); "" for a
    name that is no dotted parameter path (a constant the exporter made)."""
    head, dot, _ = initializer.rpartition(".")
    return head if dot and not head.startswith(("_", "/")) and " " not in head else ""


def _unwrapped(path: str) -> str:
    return "" if path == EXPORT_WRAPPER else path.removeprefix(EXPORT_WRAPPER + ".")


def under(path: str, prefixes: Iterable[str]) -> bool:
    """Whether module `path` is one of `prefixes` or inside one (`layer1.0` is under
    `layer1`; `layer10` is not)."""
    return any(path == p or path.startswith(p + ".") for p in prefixes if p)


def nodes_under(model: onnx.ModelProto, prefixes: Iterable[str]) -> list[str]:
    """The names of the nodes whose module is one of `prefixes` or inside one, in graph order."""
    wanted = [p.strip() for p in prefixes if p.strip()]
    return [name for name, scope in node_scopes(model).items() if under(scope.path, wanted)]


def module_paths(model: onnx.ModelProto) -> set[str]:
    """Every module path some node came from, and each of its parents."""
    paths: set[str] = set()
    for scope in node_scopes(model).values():
        parts = scope.path.split(".") if scope.path else []
        paths.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return paths


def tensor_producers(model: onnx.ModelProto) -> dict[str, str]:
    """Each tensor name -> the name of the node that produces it."""
    return {out: node.name for node in model.graph.node for out in node.output if out}


def _dynamo_path(scopes_text: str | None) -> str | None:
    """The deepest module of a dynamo `name_scopes` list; its last item is the FX node."""
    if not scopes_text:
        return None
    try:
        scopes = ast.literal_eval(scopes_text)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        return None
    modules = [s for s in scopes[:-1] if s]
    return modules[-1] if modules else ""


def _torchscript_path(name: str) -> str:
    """`/layer1/layer1.0/conv1/Conv` -> `layer1.0.conv1`; a name without scopes -> ""."""
    path = ""
    for part in [p for p in name.split("/") if p][:-1]:  # the last part is the op
        # A level is either the full path (`layer1.0` under `layer1`) or one attribute name.
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return path
