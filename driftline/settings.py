"""What every process's settings object shares: a YAML file, ``DRIFTLINE_*`` variables that win over it,
and one-line errors that name the key.

The sidecar and the service each define their own settings class on :class:`EnvFirstSettings` and call
:func:`read_yaml_settings` and :func:`build_settings`, so the two processes read configuration the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from pydantic_settings import SettingsError as PydanticSettingsError

from .errors import ConfigError

__all__ = ["EnvFirstSettings", "build_settings", "read_yaml_settings", "state_dir"]

S = TypeVar("S", bound=BaseSettings)


def state_dir(kind: str) -> Path:
    """Where a process of ``kind`` (``sidecar``, ``sdk``) keeps its state by default: never the working directory.

    ``$XDG_STATE_HOME/driftline/<kind>`` when ``XDG_STATE_HOME`` is set, else ``/var/lib/driftline/<kind>``
    for root (system services, containers) and ``~/.local/state/driftline/<kind>`` for everyone else.
    Each process's own setting (``spool.path``, ``spool_dir=``) overrides it.
    """
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg:
        base = Path(xdg) / "driftline"
    elif hasattr(os, "geteuid") and os.geteuid() == 0:
        base = Path("/var/lib/driftline")
    else:
        base = Path.home() / ".local" / "state" / "driftline"
    return base / kind


class EnvFirstSettings(BaseSettings):
    """Settings whose YAML file arrives as init kwargs and whose environment overrides it."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings


def read_yaml_settings(path: str | Path, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The mapping in a YAML settings file (empty file: no settings); ``error`` says what is wrong."""
    p = Path(path)
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"cannot read settings file {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{p} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise error(f"{p} must hold a mapping of settings, not a {type(loaded).__name__}")
    return loaded


def build_settings(cls: type[S], data: dict[str, Any], *, what: str, path: str | Path | None = None,
                   error: type[ConfigError] = ConfigError) -> S:
    """``cls(**data)`` with the environment applied; every problem becomes one ``error`` naming the keys."""
    try:
        return cls(**data)
    except ValidationError as exc:
        where = f" in {path}" if path is not None else ""
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise error(f"invalid {what}{where}: {problems}") from None
    except PydanticSettingsError as exc:  # a DRIFTLINE_* variable that does not parse
        raise error(f"invalid DRIFTLINE_* environment variable: {exc}") from None
