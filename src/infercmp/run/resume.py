"""`--resume RUN`: reopen a run store, check the command asks for what the run measured, and
name the combinations it already holds whole, so that only the others run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infercmp.core.errors import InfercmpError
from infercmp.store.run_store import RunStore


def open_for_resume(
    run_dir: Path, model: str, settings: dict[str, Any]
) -> tuple[RunStore, frozenset[str]]:
    """The run store to continue, holding its writer lock, and the ids of the combinations
    it holds whole.

    Bad input (another model, other measurement settings, a run still being written) is one
    clear error: resuming must not mix results measured under different settings. A
    combination with fewer worker processes than `--repeat` (an interruption cut it short) is
    not whole: it is measured again in all of them, and the short one kept until then.
    """
    store = RunStore.continue_run(run_dir)
    try:
        _check_resumable(store, run_dir, model, settings)
    except BaseException:
        store.close()
        raise
    repeat = settings.get("repeat") or 1
    whole = (r for r in store.results if r.status != "ok" or len(r.processes) >= repeat)
    return store, frozenset(r.combo_id for r in whole)


def _check_resumable(store: RunStore, run_dir: Path, model: str, settings: dict[str, Any]) -> None:
    if store.model != model:
        raise InfercmpError(
            f"--resume {run_dir}: that run measured model '{store.model}', not '{model}'; "
            "resume it with the command that started it"
        )
    before = store.meta.get("settings") or {}
    for key in ("experiments", "loads", "measurement", "repeat", "sample_hz"):
        # "loads" is stored only when a load flag was given: its absence is a setting too.
        if (key in before or key == "loads") and before.get(key) != settings.get(key):
            raise InfercmpError(
                f"--resume {run_dir}: its {key} was {_setting(before.get(key))}, this command "
                f"asks for {_setting(settings.get(key))}; run 'infercmp bench --resume "
                f"{run_dir}' alone to continue it with the flags that started it"
            )


def _setting(value: Any) -> str:
    """A stored setting in one line, as JSON reads (not Python's repr of a dict)."""
    return json.dumps(value, sort_keys=True, default=str) if value is not None else "the default"
