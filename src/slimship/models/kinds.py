"""The built-in model kinds, registered explicitly (one import per kind module), and the lookup a run uses."""

from __future__ import annotations

from typing import Any

from slimship.models.adapter import MODEL_KINDS, ModelAdapter


def load_builtin_kinds() -> None:
    """Import (and so register) every built-in model kind; cheap (no torch) and idempotent."""
    from slimship.models import hf_text, timm_image  # noqa: F401


def adapter_for(section: Any) -> ModelAdapter:
    """The adapter for a recipe's ``model`` section (``section.kind`` names its registered factory). Raises
    SlimshipError for an unknown kind, naming the known ones."""
    load_builtin_kinds()
    return MODEL_KINDS.get(section.kind)(section)
