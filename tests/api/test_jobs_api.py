"""/v1/jobs at the HTTP boundary: every reason in one 422, 404s, auth, the documented contract.
(Jobs that run a worker are tested in tests/jobs.)"""

from __future__ import annotations

import pytest


def _csv_dataset(client, auth) -> str:
    rows = "f1,f2,label\n" + "".join(f"{i},{i % 3},{'ab'[i % 2]}\n" for i in range(20))
    response = client.post("/v1/datasets", headers=auth, files={"file": ("t.csv", rows.encode())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_bad_job_gets_every_reason_in_one_422(client, auth):
    dataset = _csv_dataset(client, auth)  # tabular
    body = {"model": "mobilenet_v2", "dataset": dataset, "method": "nope", "budget": 2, "epochs": 0,
            "sparsity": "3:4", "compile": "warp", "image_size": 3, "surprise": 1}
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    fields = sorted(reason["loc"][-1] for reason in error["detail"])
    assert fields == sorted(["budget", "epochs", "sparsity", "surprise", "method", "compile", "dataset", "image_size"])
    messages = " ".join(reason["msg"] for reason in error["detail"])
    assert "takes image data, the dataset is tabular" in messages and "unknown method 'nope'" in messages
    assert "taskedge" in messages  # the accepted methods are listed
    assert client.get("/v1/jobs", headers=auth).json() == []  # nothing was queued


def test_unknown_model_and_dataset_and_missing_fields(client, auth):
    response = client.post("/v1/jobs", headers=auth, json={"model": "no_such_model", "dataset": "nope"})
    reasons = {r["loc"][-1]: r["msg"] for r in response.json()["error"]["detail"]}
    assert response.status_code == 422 and set(reasons) == {"model", "dataset"}
    assert "mobilenet_v2" in reasons["model"] and "POST /v1/datasets" in reasons["dataset"]
    factory = client.post("/v1/jobs", headers=auth, json={"model": "no_such_pkg.mod:make=/no/w.safetensors",
                                                          "dataset": _csv_dataset(client, auth)})
    assert factory.status_code == 422
    assert len([r for r in factory.json()["error"]["detail"] if r["loc"][-1] == "model"]) == 2
    empty = client.post("/v1/jobs", headers=auth, json={})
    assert {r["loc"][-1] for r in empty.json()["error"]["detail"]} == {"model", "dataset"}


def test_unknown_job_is_404_everywhere(client, auth):
    for method, path in [("GET", "/v1/jobs/nope"), ("POST", "/v1/jobs/nope/cancel"), ("GET", "/v1/jobs/nope/events"),
                         ("GET", "/v1/jobs/nope/artifacts"), ("GET", "/v1/jobs/nope/artifacts/delta.safetensors")]:
        response = client.request(method, path, headers=auth)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path


def test_jobs_need_the_token(client):
    assert client.get("/v1/jobs").status_code == 401
    assert client.post("/v1/jobs", json={}).status_code == 401


def test_job_routes_are_documented(client, auth):
    schema = client.get("/openapi.json", headers=auth).json()
    create = schema["paths"]["/v1/jobs"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"model", "dataset"}
    assert {"method", "budget", "epochs", "lr", "batch_size", "memory_budget_mb", "sparsity", "compile",
            "seed", "image_size", "max_length", "token_keep", "token_layer"} <= set(body["properties"])
    assert all(p.get("description") for p in body["properties"].values())
    for path in ["/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/events",
                 "/v1/jobs/{job_id}/artifacts", "/v1/jobs/{job_id}/artifacts/{name}"]:
        assert path in schema["paths"]


def test_2_4_with_a_method_that_writes_dense_updates_is_rejected_at_submit(client, auth):
    body = {"model": "mobilenet_v2", "dataset": "whatever", "method": "lora", "sparsity": "2:4"}
    reasons = {r["loc"][-1]: r["msg"] for r in client.post("/v1/jobs", headers=auth, json=body).json()["error"]["detail"]}
    assert "cannot be kept by method 'lora'" in reasons["sparsity"] and "taskedge" in reasons["sparsity"]


@pytest.mark.parametrize("field,words", [("lr", "trains only the classification head"),
                                         ("head_lr", "cached backbone features by L-BFGS")])
def test_a_learning_rate_on_a_head_only_job_is_rejected_not_ignored(client, auth, field, words):
    """Its head is fit by L-BFGS on cached features: neither rate would be honoured."""
    body = {"model": "mobilenet_v2", "dataset": "whatever", "method": "head", field: 1e-2}
    reasons = _reasons(client.post("/v1/jobs", headers=auth, json=body))
    assert words in reasons[field] and "leave it out" in reasons[field]
    assert client.get("/v1/jobs", headers=auth).json() == []  # nothing queued


def _reasons(response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {r["loc"][-1]: r["msg"] for r in response.json()["error"]["detail"]}


def test_token_selection_is_refused_where_no_text_encoder_attends(client, auth, test_model_module):
    """Images, tabular data and user factories have no attention to select tokens with: a 422, not a silent no-op."""
    dataset = _csv_dataset(client, auth)  # tabular
    for model in ("mobilenet_v2", "edged_jobs_test_model:wine_mlp"):
        for option in ({"token_keep": 0.5}, {"token_keep": 16, "token_layer": 0}):
            reasons = _reasons(client.post("/v1/jobs", headers=auth, json={"model": model, "dataset": dataset, **option}))
            for name in option:
                assert "applies to text models" in reasons[name], (model, reasons)
    assert client.get("/v1/jobs", headers=auth).json() == []  # nothing queued


def test_token_selection_options_and_their_compile_are_checked(client, auth):
    body = {"model": "minilm-l6", "dataset": "whatever"}
    for keep in (0, 1.5, 2.5, True, "half"):
        assert "token_keep" in _reasons(client.post("/v1/jobs", headers=auth, json={**body, "token_keep": keep}))
    reasons = _reasons(client.post("/v1/jobs", headers=auth, json={**body, "token_layer": 1}))
    assert "no effect without token_keep" in reasons["token_layer"]
    reasons = _reasons(client.post("/v1/jobs", headers=auth, json={**body, "token_keep": 0.5, "compile": "auto"}))
    assert "eager PyTorch only" in reasons["compile"]
    assert set(_reasons(client.post("/v1/jobs", headers=auth, json={**body, "token_keep": 0.5}))) == {"dataset"}
