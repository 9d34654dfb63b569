"""``GET /v1/models/{model}/shadow``: the shadow model's verdict against live, judged now."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from .deps import PartsDep, ReadAccess

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["shadow"])


@router.get("/{model}/shadow", dependencies=[ReadAccess])
def get_shadow(parts: PartsDep, model: str) -> dict[str, Any]:
    """Verdict (``ready``, ``worse``, ``undecided``), reasons, label agreement, paired score difference,
    error ratio and p99 latency per side, and each always-valid comparison, over the lookback."""
    return parts.shadow.evaluate(model).to_dict()  # type: ignore[no-any-return]
