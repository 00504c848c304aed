"""The benches' comma-separated list and single-number arguments: a bad value is argparse's one-line `error:` (exit 2)
naming it and what is accepted, before any work, never a traceback."""

import argparse

import pytest

from edged.bench import adapt, align, api, int8, predict, prune, sparse, sparse_gpu_probe, switch, tokens, train_step
from edged.bench.cli_lists import (IMAGE_SIZE, count, device_name, field_count, field_float_list, field_number, float_list,
                                   int_list, number)
from edged.pipeline.config import AdaptConfig
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


def test_benches_read_good_lists_as_before():
    assert tokens.parse_keeps("1.0,0.5@1,32@0,4") == [{"token_keep": 1.0}, {"token_keep": 0.5, "token_layer": 1},
                                                      {"token_keep": 32, "token_layer": 0}, {"token_keep": 4}]
    assert adapt.parse_grid("0.001,0.02:0.01") == ([0.001, 0.02], [0.01])
    assert adapt.parse_seeds("2,0,1") == [2, 0, 1]


def test_count_and_number_read_values_within_their_bounds():
    assert count(0, 19)("0") == 0 and count(0, 19)("19") == 19 and count()("12345") == 12345
    assert number(0.0, 1.0, open_minimum=True)("1") == 1.0 and number(0.0)("0") == 0.0 and number()("-2.5") == -2.5
    assert IMAGE_SIZE("16") == 16 and IMAGE_SIZE("1024") == 1024


@pytest.mark.parametrize("parse, text, said", [
    (count(0, 19), "20", "'20' is not an integer >= 0 and <= 19"),
    (count(0, 19), "-1", "'-1' is not an integer >= 0 and <= 19"),
    (count(2), "1.5", "'1.5' is not an integer >= 2"),
    (number(0.0, 1.0, open_minimum=True), "0", "'0' is not a number > 0 and <= 1"),
    (number(0.0, 1.0, open_minimum=True), "2.0", "'2.0' is not a number > 0 and <= 1"),
    (number(0.0, 1.0, open_minimum=True), "nan", "'nan' is not a finite number > 0 and <= 1"),
    (number(0.0, open_minimum=True), "inf", "'inf' is not a finite number > 0"),
    (number(), "-inf", "'-inf' is not a finite number"),
    (number(0.0), "half", "'half' is not a finite number >= 0"),
    (IMAGE_SIZE, "1025", "'1025' is not an integer >= 16 and <= 1024"),
])
def test_a_single_number_is_refused_naming_the_value_and_what_is_accepted(parse, text, said):
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        parse(text)
    assert str(caught.value) == said


def test_field_count_and_field_number_take_the_bounds_the_model_sets():
    nice, rank, budget = field_count(Settings, "worker_nice"), field_count(AdaptConfig, "lora_rank"), field_number(
        AdaptConfig, "budget")
    assert nice("19") == 19 and rank("256") == 256 and budget("1") == 1.0
    for parse, text, said in ((nice, "20", "'20' is not an integer >= 0 and <= 19"),
                              (rank, "257", "'257' is not an integer >= 1 and <= 256"),
                              (budget, "0", "'0' is not a number > 0 and <= 1")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"^{said}$"):
            parse(text)


def test_device_name_keeps_every_name_resolve_device_knows_and_refuses_the_rest():
    assert [device_name(name) for name in ("auto", "cpu", "cuda", "cuda:1")] == ["auto", "cpu", "cuda", "cuda:1"]
    for name, said in (("gpu", "unknown device 'gpu'"), ("cuda:x", "unknown device 'cuda:x'"),
                       ("meta", "unsupported device 'meta'")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"^{said}; accepted: auto, cpu, cuda, cuda:N$"):
            device_name(name)


BAD_NUMBERS = [
    (adapt.main, ["--image-size", "0"], "argument --image-size: '0' is not an integer >= 16 and <= 1024"),
    (adapt.main, ["--max-length", "1"], "argument --max-length: '1' is not an integer >= 2"),
    (adapt.main, ["--device", "gpu"], "argument --device: unknown device 'gpu'; accepted: auto, cpu, cuda, cuda:N"),
    (align.main, ["--image-size", "-64"], "argument --image-size: '-64' is not an integer >= 16 and <= 1024"),
    (align.main, ["--epochs", "1001"], "argument --epochs: '1001' is not an integer >= 1 and <= 1000"),
    (align.main, ["--budget", "1.5"], "argument --budget: '1.5' is not a number > 0 and <= 1"),
    (align.main, ["--strength", "11"], "argument --strength: '11' is not a number >= 0 and <= 10"),
    (align.main, ["--device", "tpu"], "argument --device: unknown device 'tpu'"),
    (api.main, ["--duration", "0"], "argument --duration: '0' is not a number > 0"),
    (api.main, ["--duration", "nan"], "argument --duration: 'nan' is not a finite number > 0"),
    (api.main, ["--followers", "-1"], "argument --followers: '-1' is not an integer >= 0"),
    (api.main, ["--image-size", "2048"], "argument --image-size: '2048' is not an integer >= 16 and <= 1024"),
    (api.main, ["--worker-nice", "-1"], "argument --worker-nice: '-1' is not an integer >= 0 and <= 19"),
    (api.main, ["--worker-threads", "-2"], "argument --worker-threads: '-2' is not an integer >= 0"),
    (int8.main, ["--budget", "0"], "argument --budget: '0' is not a number > 0 and <= 1"),
    (int8.main, ["--batch-size", "5000"], "argument --batch-size: '5000' is not an integer >= 1 and <= 4096"),
    (int8.main, ["--image-size", "8"], "argument --image-size: '8' is not an integer >= 16 and <= 1024"),
    (int8.main, ["--seed", "x"], "argument --seed: 'x' is not an integer >= 0"),
    (predict.main, ["--image-size", "0"], "argument --image-size: '0' is not an integer >= 16 and <= 1024"),
    (predict.main, ["--max-wait-ms", "-1"], "argument --max-wait-ms: '-1' is not a number >= 0 and <= 1000"),
    (predict.main, ["--max-wait-ms", "inf"], "argument --max-wait-ms: 'inf' is not a finite number >= 0 and <= 1000"),
    (predict.main, ["--threads", "0"], "argument --threads: '0' is not an integer >= 1"),
    (predict.main, ["--seed", "-1"], "argument --seed: '-1' is not an integer >= 0"),
    (prune.main, ["--seed", "-3"], "argument --seed: '-3' is not an integer >= 0"),
    (prune.main, ["--epochs", "0"], "argument --epochs: '0' is not an integer >= 1 and <= 1000"),
    (prune.main, ["--device", "cuda:"], "argument --device: unknown device 'cuda:'"),
    (sparse.main, ["--image-size", "0"], "argument --image-size: '0' is not an integer >= 16 and <= 1024"),
    (sparse.main, ["--tune-s", "0"], "argument --tune-s: '0' is not a number > 0"),
    (sparse_gpu_probe.main, ["--out", "unused", "--budget-s", "-5"], "argument --budget-s: '-5' is not a number > 0"),
    (sparse_gpu_probe.main, ["--out", "unused", "--budget-s", "inf"], "argument --budget-s: 'inf' is not a finite number > 0"),
    (switch.main, ["--tasks", "1"], "argument --tasks: '1' is not an integer >= 2"),
    (switch.main, ["--device", "cpu", "--tasks", "8"], "argument --tasks: 8 is more than the 7 digit tasks of mobilenet_v2; "
                                                       "accepted: at most 7 with mobilenet_v2 or --layouts, more with vit-b16"),
    (switch.main, ["--layouts", "--tasks", "9"], "argument --tasks: 9 is more than the 7 digit tasks of mobilenet_v2"),
    (switch.main, ["--model", "mobilenet_v2", "--tasks", "8"], "argument --tasks: 8 is more than the 7 digit tasks"),
    (switch.main, ["--switches", "3"], "argument --switches: '3' is not an integer >= 4"),
    (switch.main, ["--image-size", "15"], "argument --image-size: '15' is not an integer >= 16 and <= 1024"),
    (switch.main, ["--cache-fraction", "0"], "argument --cache-fraction: '0' is not a number > 0 and <= 1"),
    (switch.main, ["--cache-fraction", "2.0"], "argument --cache-fraction: '2.0' is not a number > 0 and <= 1"),
    (switch.main, ["--full-checkpoints", "0"], "argument --full-checkpoints: '0' is not an integer >= 1"),
    (switch.main, ["--threads", "0"], "argument --threads: '0' is not an integer >= 1"),
    (switch.main, ["--seed", "-1"], "argument --seed: '-1' is not an integer >= 0"),
    (switch.main, ["--device", "gpu"], "argument --device: unknown device 'gpu'"),
    (tokens.main, ["--budget", "nan"], "argument --budget: 'nan' is not a finite number > 0 and <= 1"),
    (tokens.main, ["--epochs", "2000"], "argument --epochs: '2000' is not an integer >= 1 and <= 1000"),
    (train_step.main, ["--budget", "-0.1"], "argument --budget: '-0.1' is not a number > 0 and <= 1"),
    (train_step.main, ["--lora-rank", "300"], "argument --lora-rank: '300' is not an integer >= 1 and <= 256"),
    (train_step.main, ["--profile", "-1"], "argument --profile: '-1' is not an integer >= 0"),
    (train_step.main, ["--device", "mps"], "argument --device: unsupported device 'mps'"),
]


@pytest.mark.parametrize("main, argv, said", BAD_LISTS + BAD_NUMBERS,
                         ids=[f"{main.__module__.rsplit('.', 1)[-1]} {' '.join(argv)}"
                              for main, argv, _ in BAD_LISTS + BAD_NUMBERS])
def test_each_bench_refuses_a_bad_list_or_number_with_one_line_naming_what_it_accepts(main, argv, said, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f": error: {said}" in err.strip().splitlines()[-1] and "Traceback" not in err


def test_benches_keep_their_defaults_and_read_good_numbers_as_before():
    defaults = adapt.parse_args([])
    assert (defaults.epochs, defaults.batch_size, defaults.image_size, defaults.max_length, defaults.device) == (
        3, 32, None, None, "auto")
    given = adapt.parse_args(["--epochs", "1000", "--image-size", "16", "--max-length", "2", "--device", "cuda:1"])
    assert (given.epochs, given.image_size, given.max_length, given.device) == (1000, 16, 2, "cuda:1")
