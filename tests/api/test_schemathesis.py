"""A bounded, seeded Schemathesis run over `create_app(settings)`: no 5xx, and every response as the OpenAPI
document says (status codes, content types, bodies, headers). The store holds a real dataset and a finished
job with an artifact, so the list routes answer with real rows."""

from __future__ import annotations

import pytest
import schemathesis  # a dev extra (deploy/setup.sh installs it)
from hypothesis import HealthCheck, seed, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from suite_settings import TEST_FACTORIES, TEST_TOKEN
from edged.api.app import create_app, prepare_store
from edged.jobs import records
from edged.jobs.states import JobState
from edged.settings import get_settings
from edged.store import datasets
from edged.store.blobs import BlobStore
from edged.store.db import open_db
from edged.pipeline.config import AdaptConfig, JobConfig

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
MAX_EXAMPLES = 100  # per operation: 18 operations in ~20 s on this 2-core box (200: 35 s, clean with other seeds too)


def _seed_store(app_settings, tmp_path) -> None:
    """A dataset and a succeeded job with one artifact, written through the store's own functions."""
    prepare_store(app_settings)
    db, blobs = open_db(app_settings.db_path), BlobStore(app_settings.blobs_dir)
    try:
        rows = "f1,f2,label\n" + "".join(f"{i},{i % 3},{'ab'[i % 2]}\n" for i in range(20))
        dataset = datasets.save_dataset(db, blobs, "t.csv", rows.encode(), limits=app_settings.upload_limits())
        job_id = records.create_job(db, "edged_jobs_test_model:small_cnn", dataset["id"], "taskedge",
                                   JobConfig(adapt=AdaptConfig()))
        assert records.claim_next(db)["id"] == job_id
        artifact = tmp_path / "delta.safetensors"
        artifact.write_bytes(b"not really safetensors")
        records.add_artifact(db, blobs, job_id, "delta.safetensors", artifact)
        records.finish_running(db, job_id, JobState.SUCCEEDED, metrics={"accuracy_after": 0.9})
    finally:
        db.close()


def _document() -> dict:
    """The app's OpenAPI document (create_app touches no disk; the document does not depend on the data dir)."""
    return create_app(get_settings(token=TEST_TOKEN, model_factories=TEST_FACTORIES)).openapi()


# Loaded at collection from the document; requests go to the `client` fixture's app, whose lifespan runs.
schema = schemathesis.openapi.from_dict(_document())


@pytest.fixture
def seeded_store(settings, tmp_path) -> None:
    _seed_store(settings, tmp_path)


@pytest.fixture
def seeded_client(seeded_store, client):
    """The app over the seeded store: seeded first, so the app's job manager never sees the job queued."""
    return client


@schema.parametrize()
@seed(20261202)
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_the_api_answers_as_documented(case, seeded_client):
    request = case.as_transport_kwargs(base_url="http://testserver", headers=AUTH)
    if not request.get("cookies"):  # none in this API; the test client deprecates per-request cookies
        request.pop("cookies", None)
    if request.get("files"):  # requests' form encoding takes numbers as values; the test client (httpx) takes text
        request["files"] = [(name, (filename, value if isinstance(value, (str, bytes)) else str(value)))
                            for name, (filename, value) in request["files"]]
    response = seeded_client.request(**request)
    response.request.read()  # a streamed (multipart) body, read so the checks can show it
    case.validate_response(response, checks=CHECKS, headers=AUTH)
