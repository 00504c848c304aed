"""The benches' comma-separated list arguments: a bad list is argparse's one-line `error:` (exit 2) naming the bad
item and what is accepted, before any work, never a traceback."""

import argparse

import pytest

from edged.bench import adapt, api, predict, prune, sparse, sparse_gpu_probe, tokens, train_step
from edged.bench.cli_lists import field_float_list, float_list, int_list
from edged.settings import Settings


def test_int_list_reads_comma_separated_integers_at_or_above_the_minimum():
    assert int_list()("1,8, 32") == [1, 8, 32]
    assert int_list(minimum=0, distinct=True)("0,2,1") == [0, 2, 1]


@pytest.mark.parametrize("text, said", [("abc", "'abc' is not an integer"), ("1,2.5", "'2.5' is not an integer"),
                                        ("4,0", "'0' is out of range"), ("", "an empty list"),
                                        ("1,,4", "an empty item in '1,,4'"), ("1,", "an empty item")])
def test_int_list_names_the_bad_item_and_what_it_accepts(text, said):
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        int_list(example="1,4,16")(text)
    assert str(caught.value).startswith(said)
    assert str(caught.value).endswith("; accepted: comma-separated integers >= 1, e.g. 1,4,16")


def test_int_list_refuses_a_repeat_where_items_must_be_distinct():
    with pytest.raises(argparse.ArgumentTypeError, match="'1' is given twice; accepted: distinct comma-separated "
                                                         "integers >= 0, e.g. 0,1,2"):
        int_list(minimum=0, distinct=True)("0,1,1")


def test_float_list_reads_numbers_within_its_bounds():
    assert float_list(0.0, 1000.0, example="0,5")("0,5.5,1000") == [0.0, 5.5, 1000.0]
    assert float_list(example="1")("-3,1e3") == [-3.0, 1000.0]


@pytest.mark.parametrize("text, said", [("x", "'x' is not a finite number"), ("nan", "'nan' is not a finite number"),
                                        ("0.5,inf", "'inf' is not a finite number"), ("0", "'0' is out of range"),
                                        ("1.5", "'1.5' is out of range"), (" ", "an empty list")])
def test_float_list_names_the_bad_item_and_what_it_accepts(text, said):
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        float_list(0.0, 1.0, open_minimum=True, example="0.001,0.01")(text)
    assert str(caught.value) == f"{said}; accepted: comma-separated numbers > 0 and <= 1, e.g. 0.001,0.01"


def test_field_float_list_takes_the_bounds_the_setting_takes():
    waits = field_float_list(Settings, "predict_max_wait_ms", example="0,5")
    assert waits("0,1000") == [0.0, 1000.0]
    with pytest.raises(argparse.ArgumentTypeError, match="numbers >= 0 and <= 1000, e.g. 0,5"):
        waits("1000.5")


BAD_LISTS = [
    (api.main, ["--clients", "abc"], "argument --clients: 'abc' is not an integer; accepted: comma-separated integers >= 1"),
    (api.main, ["--clients", "1,,10"], "argument --clients: an empty item in '1,,10'"),
    (predict.main, ["--batches", "0"], "argument --batches: '0' is out of range; accepted: comma-separated integers >= 1"),
    (predict.main, ["--clients", "two"], "argument --clients: 'two' is not an integer"),
    (predict.main, ["--waits", "5,1001"], "argument --waits: '1001' is out of range; accepted: comma-separated numbers "
                                          ">= 0 and <= 1000"),
    (sparse.main, ["--device", "cpu", "--batches", "1,x"], "argument --batches: 'x' is not an integer"),
    (sparse_gpu_probe.main, ["--out", "unused", "--batches", "8,-1"], "argument --batches: '-1' is out of range"),
    (prune.main, ["--recovery-budgets", "x"], "argument --recovery-budgets: 'x' is not a finite number; accepted: "
                                              "comma-separated numbers > 0 and <= 1"),
    (prune.main, ["--recovery-budgets", "0"], "argument --recovery-budgets: '0' is out of range"),
    (prune.main, ["--distill-weights", "0,2"], "argument --distill-weights: '2' is out of range; accepted: "
                                               "comma-separated numbers >= 0 and <= 1"),
    (adapt.main, ["--seeds", "0,0"], "argument --seeds: '0' is given twice; accepted: distinct comma-separated integers >= 0"),
    (adapt.main, ["--lr-grid", "0.01"], "argument --lr-grid: '0.01' is not LRS:HEAD_LRS"),
    (adapt.main, ["--lr-grid", "0.01:0"], "argument --lr-grid: '0' is out of range; accepted: comma-separated numbers > 0"),
    (tokens.main, ["--seeds", "-1"], "argument --seeds: '-1' is out of range"),
    (tokens.main, ["--keeps", "1.0,half"], "argument --keeps: 'half' is not a valid token_keep[@token_layer]"),
    (tokens.main, ["--keeps", "1.0,0.5@x"], "argument --keeps: '0.5@x' is not a valid token_keep[@token_layer]"),
    (tokens.main, ["--keeps", "1.0,1.5"], "argument --keeps: '1.5' is not a valid token_keep[@token_layer]"),
    (tokens.main, ["--keeps", "1.0,0.5@-1"], "argument --keeps: '0.5@-1' has a negative token_layer"),
    (train_step.main, ["--methods", "taskedge,nope"], "argument --methods: unknown method 'nope'; accepted: "
                                                      "comma-separated methods of bn_bias"),
]


@pytest.mark.parametrize("main, argv, said", BAD_LISTS,
                         ids=[f"{main.__module__.rsplit('.', 1)[-1]} {' '.join(argv)}" for main, argv, _ in BAD_LISTS])
def test_each_bench_refuses_a_bad_list_with_one_line_naming_what_it_accepts(main, argv, said, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f": error: {said}" in err.strip().splitlines()[-1] and "Traceback" not in err


def test_benches_read_good_lists_as_before():
    assert tokens.parse_keeps("1.0,0.5@1,32@0,4") == [{"token_keep": 1.0}, {"token_keep": 0.5, "token_layer": 1},
                                                      {"token_keep": 32, "token_layer": 0}, {"token_keep": 4}]
    assert adapt.parse_grid("0.001,0.02:0.01") == ([0.001, 0.02], [0.01])
    assert adapt.parse_seeds("2,0,1") == [2, 0, 1]
