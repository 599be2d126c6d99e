"""Results a study caches in its run folder (``splits.json``, synthetic sets, per-run
``metrics.json``) carry the settings that produced them, and are reused only when this run's
settings are the same: resuming a folder (``hydra.run.dir=<folder>``) with another protocol,
split, scale or checkpoint would otherwise put stale numbers into the new table.

Settings are flat ``{option: value}`` dicts, named as the user sets them (``protocol``,
``split.seed``, ``train.epochs``, ``data.train_fraction``), so a refusal can say which option
changed. A fingerprint (hash) of them is stored beside them for a quick look.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from defectsynth.errors import ConfigError
from defectsynth.utils.io import write_text

SETTINGS_FILE = "study_settings.json"  # in a synthetic set's folder


def normalized(settings: Mapping[str, Any]) -> dict[str, Any]:
    """As JSON stores them (tuples → lists, paths → strings), so stored and current compare."""
    return json.loads(json.dumps(dict(settings), sort_keys=True, default=str))


def fingerprint(settings: Mapping[str, Any]) -> str:
    text = json.dumps(normalized(settings), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What is stored with a cached result."""
    return {"settings": normalized(settings), "fingerprint": fingerprint(settings)}


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The options whose values differ (an option only one side has counts as different)."""
    now = normalized(current)
    return sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))


def check_reuse(where: Path, stored: Mapping[str, Any] | None, current: Mapping[str, Any]) -> None:
    """Stop unless the cached result at ``where`` was made with ``current`` settings."""
    advice = f"Start a new run folder (drop hydra.run.dir=), or delete {where} to recompute it."
    if not isinstance(stored, Mapping):
        raise ConfigError(
            f"{where} is a cached study result without the settings that produced it (written "
            f"by an earlier version), so it cannot be checked against this run's. {advice}"
        )
    changed = differences(stored, current)
    if changed:
        now = normalized(current)
        listed = "; ".join(f"{k}: {stored.get(k)!r} there, {now.get(k)!r} now" for k in changed)
        raise ConfigError(
            f"{where} was made with other settings than this run ({listed}); reusing it would "
            f"mix results of different settings in one table. {advice}"
        )


def claim_folder(folder: Path, settings: Mapping[str, Any], complete: bool) -> None:
    """Before a synthetic set in ``folder`` is made or reused: a ``complete`` set must have been
    made with ``settings``; an incomplete one is (re)made, so it takes them on."""
    file = folder / SETTINGS_FILE
    if complete:
        stored = json.loads(file.read_text()).get("settings") if file.is_file() else None
        check_reuse(folder, stored, settings)
        return
    write_text(json.dumps(stamp(settings), indent=2) + "\n", file)
