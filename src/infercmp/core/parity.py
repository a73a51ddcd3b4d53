"""The one parity rule: an engine's outputs against PyTorch's, for `export` and `bench` alike.

An output passes when it has the reference's shape and every element satisfies
`|got - ref| <= atol + rtol * |ref|` (NaN only where the reference has NaN). The absolute
tolerance defaults to `rtol * max|ref|` per output, so logits near zero do not fail a check
that their scale makes meaningless. The headline figure everywhere (bench table, report,
md/csv/json) is the largest absolute error over the outputs, shown with the tolerances.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from infercmp.core.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

# Relative tolerances against the PyTorch fp32 CPU reference: fp16 keeps ~3 decimal digits
# and bf16 ~2, and errors grow through the layers. fp32 on CUDA gets 1e-3 because both
# PyTorch's cuDNN convolutions and ONNX Runtime's CUDA EP use TF32 by default on Ampere and
# newer (seen on the H200: 5e-4 of the output scale, cosine 0.9999998).
DEFAULT_RTOL: dict[tuple[str, str], float] = {
    ("fp32", "cpu"): 1e-4,
    ("fp32", "cuda"): 1e-3,
    ("fp16", "cpu"): 1e-2,
    ("fp16", "cuda"): 1e-2,
    ("bf16", "cpu"): 5e-2,
    ("bf16", "cuda"): 5e-2,
    # int8: 8-bit activations carry 1/255 of each tensor's calibrated range per layer, and
    # inputs outside that range (random inputs against a dataset calibration) clip; errors of
    # a few percent of the output scale are normal after a deep network. A broken quantization
    # (a wrong scale or zero point, channels out of order, a range from the wrong data) errs
    # by the order of the output scale itself. 0.1 (with atol = 0.1 x max|ref|) sits between:
    # it catches the broken, not the inaccurate. Accuracy on the plugin's dataset judges int8
    # (bench --accuracy); parity on random inputs cannot (docs/int8.md), so tune never tries it.
    ("int8", "cpu"): 1e-1,
    ("int8", "cuda"): 1e-1,
}


def default_rtol(precision: str, device: str) -> float:
    return DEFAULT_RTOL[precision, device]


class OutputParity(BaseModel):
    """One output against the reference. `at` names the input shape (export checks several)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    at: str | None = None
    shape: list[int]
    reference_shape: list[int]
    dtype: str
    reference_dtype: str
    max_abs: float | None  # None when the shapes differ
    max_rel: float | None
    cosine: float | None
    atol: float | None  # the absolute tolerance applied (the scaled default when none given)
    ok: bool

    def describe(self) -> str:
        where = f" at the {self.at} shape" if self.at else ""
        if self.max_abs is None:
            return (
                f"output '{self.name}'{where}: shape {self.shape} but PyTorch gives "
                f"{self.reference_shape}"
            )
        return (
            f"output '{self.name}'{where}: max abs {self.max_abs:.3g} (atol {self.atol:.3g}), "
            f"max rel {self.max_rel:.3g}, cosine {self.cosine:.6f}, dtype {self.dtype} "
            f"(PyTorch {self.reference_dtype})"
        )


class Parity(BaseModel):
    """All outputs of one run against the reference, and the tolerances they were judged by."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    rtol: float
    atol: float | None  # None: rtol x max|reference| per output
    outputs: list[OutputParity]

    @property
    def max_abs(self) -> float | None:
        """The headline: the largest absolute error over all outputs (None: a shape differs)."""
        values = [o.max_abs for o in self.outputs]
        return None if not values or None in values else max(values)  # type: ignore[type-var]

    def tolerance_text(self) -> str:
        atol = f"{self.atol:g}" if self.atol is not None else "rtol x max|ref|"
        return f"rtol {self.rtol:g}, atol {atol}"

    def headline(self) -> str:
        """'ok, max abs err 7.1e-05' / 'FAIL, max abs err 0.3' / 'FAIL, shape differs'."""
        verdict = "ok" if self.ok else "FAIL"
        value = self.max_abs
        return f"{verdict}, " + ("shape differs" if value is None else f"max abs err {value:.2g}")

    def failures(self) -> str:
        """The failing outputs in one line, for a warning."""
        bad = [o.describe() for o in self.outputs if not o.ok]
        return f"outputs differ from PyTorch beyond {self.tolerance_text()}: " + "; ".join(bad)


def compare_output(
    name: str,
    reference: np.ndarray,
    actual: np.ndarray,
    rtol: float,
    atol: float | None = None,
    at: str | None = None,
    same_dtype: bool = False,
) -> OutputParity:
    """Judge one output by the module's rule (see the module docstring).

    `same_dtype`: the output must also keep the reference's dtype (an exported graph must;
    an engine running fp16 returns fp16 outputs on purpose).
    """
    entry = OutputParity(
        name=name,
        at=at,
        shape=list(actual.shape),
        reference_shape=list(reference.shape),
        dtype=str(actual.dtype),
        reference_dtype=str(reference.dtype),
        max_abs=None,
        max_rel=None,
        cosine=None,
        atol=atol,
        ok=False,
    )
    if actual.shape != reference.shape:
        return entry
    dtype_ok = not same_dtype or actual.dtype == reference.dtype
    r = np.asarray(reference, dtype=np.float64).ravel()
    g = np.asarray(actual, dtype=np.float64).ravel()
    if r.size == 0:
        return entry.model_copy(update=dict(max_abs=0.0, max_rel=0.0, cosine=1.0, ok=dtype_ok))
    finite = np.isfinite(r) & np.isfinite(g)
    nan_match = bool(np.array_equal(np.isnan(r), np.isnan(g)))
    diff = np.where(finite, np.abs(g - r), np.where(r == g, 0.0, np.inf))
    if atol is None:
        scale = np.abs(r[np.isfinite(r)])
        atol = rtol * float(scale.max()) if scale.size else 0.0
    max_abs = float(diff.max())
    max_rel = float((diff / np.maximum(np.abs(r), np.finfo(np.float32).tiny)).max())
    return entry.model_copy(
        update=dict(
            max_abs=max_abs,
            max_rel=max_rel,
            cosine=_cosine(r, g),
            atol=atol,
            ok=dtype_ok and nan_match and bool(np.all(diff <= atol + rtol * np.abs(r))),
        )
    )


def compare_outputs(
    actual: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    names: Sequence[str],
    rtol: float,
    atol: float | None = None,
) -> Parity:
    """Every output of one run against the reference, in config order."""
    if len(actual) != len(reference):
        raise ValueError(
            f"the engine returned {len(actual)} outputs but the reference has {len(reference)}"
        )
    outputs = [
        compare_output(name, want, got, rtol, atol)
        for name, got, want in zip(names, actual, reference)
    ]
    return Parity(ok=all(o.ok for o in outputs), rtol=rtol, atol=atol, outputs=outputs)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity; 1.0 only when both are all zeros (an all-zero output is a failure)."""
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = a[finite], b[finite]
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))
