import pytest

from edged.compile import available_backends, compile_model, resolve_backend
from edged.compile.registry import AUTO_ORDER
from edged.errors import InvalidInput, Unavailable


def test_every_backend_reports_a_status_and_eager_is_always_there():
    status = available_backends()
    assert list(status) == list(AUTO_ORDER)
    for ok, reason in status.values():
        assert isinstance(ok, bool) and reason
    assert status["eager"][0]


def test_auto_picks_the_first_available_backend():
    status = available_backends()
    expected = next(name for name, (ok, _) in status.items() if ok)
    assert resolve_backend("auto") == expected


def test_missing_backend_names_what_is_missing_and_what_is_available():
    status = available_backends()
    missing = [name for name, (ok, _) in status.items() if not ok]
    if not missing:
        pytest.skip("every backend is available on this machine")
    with pytest.raises(Unavailable) as info:
        resolve_backend(missing[0])
    message = info.value.message
    assert missing[0] in message and status[missing[0]][1] in message
    for name, (ok, _) in status.items():
        assert (name in info.value.detail["available"]) == ok
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
