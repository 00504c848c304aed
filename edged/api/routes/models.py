"""GET /v1/models: the base-model registry."""

from __future__ import annotations

from fastapi import APIRouter

from edged.models.registry import ModelInfo, list_models

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=list[ModelInfo], summary="Base models a job can adapt")
def models() -> list[ModelInfo]:
    return list_models()
