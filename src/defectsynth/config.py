"""OmegaConf resolvers used by the configs in ``conf/``; imported by every entry point."""

from __future__ import annotations

from omegaconf import OmegaConf


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("add"):
        OmegaConf.register_new_resolver("add", lambda *xs: sum(xs))
    if not OmegaConf.has_resolver("round"):
        OmegaConf.register_new_resolver("round", lambda x: round(x))


register_resolvers()
