"""TensorRT's entry kind in the artifact cache: the files of a `plan` entry and its metadata."""

from __future__ import annotations

from pydantic import StrictBool

from infercmp.artifacts.cache import EntryMeta, register_kind

PLAN_FILE = "engine.plan"
LOG_FILE = "build.log"


class PlanMeta(EntryMeta):
    """A `plan` entry's metadata, as the build reads it back."""

    backend: str
    backend_version: str
    precision: str
    gpu: str
    strongly_typed: StrictBool


register_kind("plan", (PLAN_FILE, LOG_FILE), PlanMeta)
