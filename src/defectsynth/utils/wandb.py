"""W&B runs offline unless the user configured an API key or chose a mode explicitly."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

log = logging.getLogger(__name__)


def has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        entry = netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc"))
        return entry.authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def default_wandb_mode() -> str:
    """Set WANDB_MODE=offline when no key is configured, so runs never block on a login."""
    if "WANDB_MODE" not in os.environ and not has_wandb_key():
        os.environ["WANDB_MODE"] = "offline"
        log.info("no W&B API key configured: logging offline (sync later with `wandb sync`)")
    return os.environ.get("WANDB_MODE", "online")
