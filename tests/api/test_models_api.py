"""GET /v1/models serves the base-model registry."""

from __future__ import annotations

from edged.models.registry import list_models


def test_models_lists_the_registry(client, auth):
    response = client.get("/v1/models", headers=auth)
    assert response.status_code == 200
    names = [model["name"] for model in response.json()]
    assert names == [info.name for info in list_models()] and names
    assert {"name", "kind", "description", "available"} <= set(response.json()[0])
