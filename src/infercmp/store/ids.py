"""The names a run store gives things on disk: filesystem-safe names and combination ids."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_ID_LEN = 120  # leaves room for ".json" and temp-file affixes under the 255-byte name limit


def safe_name(text: str, max_len: int = _MAX_ID_LEN) -> str:
    """`text` reduced to [A-Za-z0-9._-], never empty, '.', '..' or hidden, at most `max_len`.

    When anything had to change, a short hash of the original is appended so two different
    names cannot collide on disk (``a/b`` and ``a_b`` stay distinct).
    """
    cleaned = _UNSAFE.sub("_", text)
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    if cleaned == text and 0 < len(cleaned) <= max_len:
        return cleaned
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[: max_len - 9]}-{digest}"


def combo_id(
    engine: str,
    device: str,
    precision: str,
    shape_label: str,
    variant: str | None = None,
    load_label: str = "",
) -> str:
    """The filesystem-safe id of one combination, e.g. ``onnxruntime-cpu-fp32-224x224x3``.

    Used as a file name under the run directory, so nothing in it can escape that directory.
    """
    parts = [engine, device, precision, shape_label]
    if variant:
        parts.append(variant)
    if load_label:  # contract.Load.label: "" for one request at a time at the model's batch
        parts.append(load_label)
    return safe_name("-".join(parts))
