"""A job's `model` at POST /v1/jobs: factories only from EDGED_MODEL_FACTORIES, files only inside EDGED_MODELS_DIR,
refused with a 422 that does not reveal whether a path outside exists. (The worker checks again: tests/models.)"""

from __future__ import annotations

import pytest
from safetensors.torch import save_file

from edged.jobs.validate import checked_job

pytestmark = pytest.mark.usefixtures("test_model_module")


def _image_dataset(client, auth, uploads) -> str:
    files = {"file": ("digits.zip", uploads.zip(uploads.image_folders(size=(16, 16))))}
    response = client.post("/v1/datasets", headers=auth, files=files)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _model_reasons(client, auth, dataset: str, model: str) -> list[str]:
    response = client.post("/v1/jobs", headers=auth, json={"model": model, "dataset": dataset})
    assert response.status_code == 422, response.text
    return [r["msg"] for r in response.json()["error"]["detail"] if r["loc"][-1] == "model"]


@pytest.mark.parametrize("model", ["tempfile:mkdtemp", "os:getcwd", "shutil:rmtree", "edged_jobs_test_modelx:small_cnn"])
def test_a_factory_off_the_allow_list_is_refused_naming_the_setting(client, auth, uploads, model):
    [reason] = _model_reasons(client, auth, _image_dataset(client, auth, uploads), model)
    assert "EDGED_MODEL_FACTORIES" in reason and "edged_jobs_test_model" in reason  # the setting and its value
    assert client.get("/v1/jobs", headers=auth).json() == []


def test_an_allowed_module_with_no_such_factory_is_refused_at_submit(client, auth, uploads):
    [reason] = _model_reasons(client, auth, _image_dataset(client, auth, uploads), "edged_jobs_test_model:nope")
    assert "has no callable 'nope'" in reason


def test_paths_outside_the_models_dir_get_the_same_answer_whether_or_not_they_exist(client, auth, uploads, tmp_path,
                                                                                     settings):
    dataset = _image_dataset(client, auth, uploads)
    existing, missing = tmp_path / "outside", tmp_path / "outsidx"
    existing.mkdir()
    answers = [_model_reasons(client, auth, dataset, str(path))[0].replace(str(path), "PATH")
               for path in (existing, missing)]
    assert answers[0] == answers[1] and "outside the models directory" in answers[0]
    assert str(settings.resolved_models_dir) in answers[0]
    weights = [_model_reasons(client, auth, dataset, f"edged_jobs_test_model:small_cnn={path}")[0]
               .replace(str(path), "PATH") for path in (existing, missing)]
    assert weights[0] == weights[1] and "EDGED_MODELS_DIR" in weights[0]
    climbing = _model_reasons(client, auth, dataset, "../../outside")
    assert "outside the models directory" in climbing[0]


@pytest.mark.parametrize("model", ["~", "~/.ssh", "~root/.ssh", "~no_such_user_xyz/models"])
def test_a_model_starting_with_a_tilde_is_a_422_not_a_500(client, auth, uploads, model):
    dataset = _image_dataset(client, auth, uploads)
    [reason] = _model_reasons(client, auth, dataset, model)
    assert "'~'" in reason and "EDGED_MODELS_DIR" in reason
    [weights] = _model_reasons(client, auth, dataset, f"edged_jobs_test_model:small_cnn={model}")
    assert "'~'" in weights


def test_files_inside_the_models_dir_are_found_by_relative_or_absolute_path(client, auth, uploads, settings, db):
    dataset = _image_dataset(client, auth, uploads)
    models_dir = settings.resolved_models_dir
    models_dir.mkdir(parents=True)
    from edged_jobs_test_model import small_cnn  # importable through the test_model_module fixture

    save_file(small_cnn().state_dict(), str(models_dir / "cnn.safetensors"))  # validation checks its keys too
    for weights in ("cnn.safetensors", str(models_dir / "cnn.safetensors")):
        # Accepted by the validation POST /v1/jobs runs (checked directly: a queued job would start a worker).
        job, _ = checked_job(db, {"model": f"edged_jobs_test_model:small_cnn={weights}", "dataset": dataset}, settings)
        assert job.model.endswith(weights)
    [reason] = _model_reasons(client, auth, dataset, "edged_jobs_test_model:small_cnn=nope.safetensors")
    assert "not a file in EDGED_MODELS_DIR" in reason
    [unknown] = _model_reasons(client, auth, dataset, "no_such_model")
    assert "mobilenet_v2" in unknown and "EDGED_MODELS_DIR" in unknown


def test_a_factory_that_fails_is_refused_at_submit_with_its_error(client, auth, uploads):
    [reason] = _model_reasons(client, auth, _image_dataset(client, auth, uploads), "edged_jobs_test_model:broken")
    assert "RuntimeError: factory exploded" in reason


@pytest.mark.parametrize("model", ["mobilenet_v2", "edged_jobs_test_model:small_cnn"])
def test_drop_weight_keys_is_refused_for_models_without_a_weights_file(client, auth, uploads, model):
    body = {"model": model, "dataset": _image_dataset(client, auth, uploads), "drop_weight_keys": ["_fc."]}
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 422, response.text
    [reason] = [r["msg"] for r in response.json()["error"]["detail"] if r["loc"][-1] == "drop_weight_keys"]
    assert "applies to 'package.module:factory=weights' models" in reason and repr(model) in reason
