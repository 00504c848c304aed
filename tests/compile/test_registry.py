import pytest
import torch

from edged.compile import available_backends, compile_model, resolve_backend
from edged.errors import InvalidInput, Unavailable


NO_CUDA = not torch.cuda.is_available()


def test_every_backend_reports_a_status_and_eager_is_always_there():
    status = available_backends()
    assert list(status) == ["tensorrt", "cusparselt", "onnxruntime", "eager"]  # `auto` preference, best first
    for ok, reason in status.values():
        assert isinstance(ok, bool) and reason
    assert status["eager"][0]


@pytest.mark.skipif(not NO_CUDA, reason="the facts below are those of a machine without a CUDA GPU")
def test_without_cuda_auto_is_onnxruntime():
    # onnx, onnxscript and onnxruntime are install requirements; both GPU backends need CUDA
    status = available_backends()
    assert status["onnxruntime"][0] and not status["cusparselt"][0] and not status["tensorrt"][0]
    assert resolve_backend("auto") == "onnxruntime"


@pytest.mark.skipif(not NO_CUDA, reason="the facts below are those of a machine without a CUDA GPU")
def test_missing_backend_names_what_is_missing_and_what_is_available():
    with pytest.raises(Unavailable) as info:
        resolve_backend("cusparselt")
    message = info.value.message
    assert "cusparselt" in message and "no CUDA GPU visible to PyTorch" in message
    assert info.value.detail["available"] == ["onnxruntime", "eager"]
    assert info.value.detail["missing"] == "cusparselt"
    assert "eager" in message


def test_unknown_backend_lists_accepted_names():
    with pytest.raises(InvalidInput) as info:
        resolve_backend("tvm")
    assert "auto" in info.value.detail["accepted"]


def test_model_off_the_cpu_and_bad_inputs_are_refused(pruned_mlp, tmp_path):
    model, _, x = pruned_mlp
    with pytest.raises(InvalidInput, match="list are not supported"):
        compile_model(model, [x], "eager", tmp_path)
    with pytest.raises(InvalidInput, match="on the CPU"):
        compile_model(model.to("meta"), x, "eager", tmp_path)
