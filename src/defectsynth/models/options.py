"""Option dictionaries with defaults and typo checks (shared by every model and its parts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from defectsynth.errors import ConfigError


def merged_options(
    defaults: Mapping[str, Any], given: Mapping[str, Any] | None, option: str
) -> dict[str, Any]:
    """``defaults`` updated by ``given``; a key without a default is a typo in ``option``."""
    merged = {**defaults, **(given or {})}
    unknown = set(merged) - set(defaults)
    if unknown:
        raise ConfigError(
            f"unknown {option} options {sorted(unknown)}; expected some of {sorted(defaults)}"
        )
    return merged
