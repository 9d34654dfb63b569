"""The built-in status page: server-rendered HTML, no front-end build step, readable without JavaScript."""

from __future__ import annotations

from .render import render_index, render_model

__all__ = ["render_index", "render_model"]
