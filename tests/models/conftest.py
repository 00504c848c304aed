"""Built-in models loaded once per test session: real weights, kept to a few loads."""

from __future__ import annotations

import pytest

from edged.models import LoadedModel, load_model


@pytest.fixture(scope="session")
def mobilenet() -> LoadedModel:
    return load_model("mobilenet_v2", num_classes=10, seed=0)


@pytest.fixture(scope="session")
def minilm() -> LoadedModel:
    return load_model("minilm-l6", num_classes=5, seed=0)
