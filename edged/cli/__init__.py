"""The `edged` command line: every subcommand's parser and flags here, their work in this package's
modules (`jobs`: submit and status, `tasks`: tasks and predict, `demo` and `demo_data`: the quick-start demo, `doctor`: the
machine report) or elsewhere (`edged serve`: edged.serve, `edged bench`: edged.bench).

To add a subcommand, write `_add_<name>(subparsers)` that builds its parser and sets `run=<function>`
(taking the parsed args and returning an exit code), and append it to SUBCOMMANDS.
Errors from edged are printed as one line (no traceback) with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import types
import typing
from pathlib import Path
from typing import Callable, Literal, Optional

from pydantic import ValidationError

from edged.bench.cli_lists import IMAGE_SIZE, count, field_count, field_number, number
from edged.cli.demo import DemoOptions, run_demo
from edged.cli.doctor import diagnose, format_table
from edged.cli.jobs import status, submit
from edged.cli.tasks import list_tasks, predict
from edged.data.bundled import DIGIT_CLASSES, MNIST_5K_SAMPLES
from edged.errors import EdgedError, InvalidInput
from edged.jobs.schemas import JobCreate
from edged.pipeline.config import AdaptConfig
from edged.settings import Settings, get_settings
from edged.store.lock import lock_data_dir


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    return get_settings(args.env_file, **{k: v for k, v in overrides.items() if v is not None})


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args, host=args.host, port=args.port)
    settings.serving_token()  # fail fast, before the heavy imports of the app
    _data_dir_lock = lock_data_dir(settings.data_dir)  # before anything touches the directory; held until exit

    from edged.serve import serve

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(settings)
    return 0


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the HTTP daemon (settings from EDGED_* variables)")
    parser.add_argument("--host", help="listen address (default: EDGED_HOST, else 127.0.0.1)")
    parser.add_argument("--port", type=field_count(Settings, "port"), help="listen port (default: EDGED_PORT, else 8686)")
    parser.set_defaults(run=_serve)


def _doctor(args: argparse.Namespace) -> int:
    report = diagnose(_settings(args))
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def _add_doctor(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor", help="show what this machine offers (GPU, TensorRT, power sensors, memory, disk, packages)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.set_defaults(run=_doctor)


def _demo(args: argparse.Namespace) -> int:
    options = DemoOptions(
        samples=args.samples, epochs=args.epochs, image_size=args.image_size, budget=args.budget,
        batch_size=args.batch_size, data_dir=args.data_dir, url=args.url,
        token=args.token or (os.environ.get("EDGED_TOKEN") if args.url else None),
    )
    try:
        return run_demo(options)
    except KeyboardInterrupt:
        print("edged demo: interrupted", file=sys.stderr)
        return 130


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    defaults = DemoOptions()
    parser = subparsers.add_parser(
        "demo", help="start a daemon on loopback, upload MNIST digits, adapt MobileNetV2 with TaskEdge, show results"
    )
    parser.add_argument("--url", help="use this running daemon (e.g. http://127.0.0.1:8686) instead of starting one")
    parser.add_argument("--token", help="the running daemon's token (default: EDGED_TOKEN); only with --url")
    parser.add_argument(
        "--data-dir", type=Path, help="data dir of the started daemon (default: ~/.local/share/edged-demo)"
    )
    # Checked here, before a daemon starts and the digits upload, against what the job will accept.
    parser.add_argument("--samples", type=count(len(DIGIT_CLASSES), MNIST_5K_SAMPLES), default=defaults.samples,
                        help="digits to upload, balanced over classes")
    parser.add_argument("--epochs", type=field_count(AdaptConfig, "epochs"), default=defaults.epochs,
                        help="training epochs")
    parser.add_argument("--image-size", type=IMAGE_SIZE, default=defaults.image_size, help="input resolution of MobileNetV2")
    parser.add_argument("--budget", type=field_number(AdaptConfig, "budget"), default=defaults.budget,
                        help="trainable fraction of the weights")
    parser.add_argument("--batch-size", type=field_count(AdaptConfig, "batch_size"), default=defaults.batch_size,
                        help="training batch size")
    parser.set_defaults(run=_demo)


def _submit(args: argparse.Namespace) -> int:
    job = {name: getattr(args, name) for name in JOB_FLAGS if getattr(args, name) is not None}
    return submit(_settings(args), args.file, job, args.follow, sys.stdout, url=args.url, name=args.name)


# Every field of a job request except the dataset (the uploaded file) is a flag of `edged submit`, read from the
# request schema itself: a new job field is a new flag with no edit here.
JOB_FLAGS = [name for name in JobCreate.model_fields if name != "dataset"]


def _number(text: str) -> typing.Union[int, float]:
    """A flag taking a count or a fraction (token_keep): '32' -> 32, '0.5' -> 0.5; nan and inf are refused (no job
    field means them, and a request body cannot carry them)."""
    return int(text) if text.lstrip("-").isdigit() else number()(text)


def _number_or_word(types_given: list[typing.Any]) -> typing.Callable[[str], typing.Union[int, float, str]]:
    """A flag taking a number or one of the union's words (lr: 0.01 or 'auto')."""
    words = [w for t in types_given if typing.get_origin(t) is Literal for w in typing.get_args(t)]

    def parse(text: str) -> typing.Union[int, float, str]:
        if text in words:
            return text
        try:
            return _number(text)
        except (ValueError, argparse.ArgumentTypeError):
            accepted = " or ".join(["a finite number", *(repr(w) for w in words)])
            raise argparse.ArgumentTypeError(f"{text!r} is not {accepted}") from None

    return parse


def _add_job_flag(parser: argparse.ArgumentParser, name: str) -> None:
    field = JobCreate.model_fields[name]
    flag = "--" + name.replace("_", "-")
    kind: typing.Any = field.annotation
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # Optional[X] -> X; int or float -> a number
        types_given = [a for a in typing.get_args(kind) if a is not type(None)]
        kind = types_given[0] if len(types_given) == 1 else _number_or_word(types_given)
    shown = not field.is_required() and field.default_factory is None and field.default is not None
    default = f" (default: {field.default})" if shown else ""
    text = f"{field.description}{default}".replace("%", "%%")  # argparse formats help with %
    if typing.get_origin(kind) is list:  # repeated: --drop-weight-keys _fc. --drop-weight-keys aux.
        parser.add_argument(flag, action="append", metavar="VALUE", help=f"{text} (repeat the flag for each value)")
    elif kind is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
    elif typing.get_origin(kind) is Literal:
        parser.add_argument(flag, choices=typing.get_args(kind), help=text)
    else:  # a float flag refuses nan and inf here: the daemon checks the bounds, a request body cannot carry these
        parser.add_argument(flag, type=number() if kind is float else kind, required=field.is_required(), help=text)


def _add_submit(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("submit", help="upload a dataset to the daemon and start a job on it")
    parser.add_argument("file", type=Path, help="the dataset: .npz, .jsonl, .csv, .zip or .tar (see README)")
    parser.add_argument("--name", help="a name for the dataset (default: the file name)")
    for name in JOB_FLAGS:
        _add_job_flag(parser, name)
    parser.add_argument("--follow", action="store_true", help="stream the job's progress until it ends")
    parser.add_argument("--url", help="the daemon's URL (default: http://EDGED_HOST:EDGED_PORT)")
    parser.set_defaults(run=_submit)


def _status(args: argparse.Namespace) -> int:
    return status(_settings(args), args.job, sys.stdout, url=args.url)


def _add_status(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="list the daemon's jobs, or show one job in detail")
    parser.add_argument("job", nargs="?", help="a job id (default: a table of all jobs)")
    parser.add_argument("--url", help="the daemon's URL (default: http://EDGED_HOST:EDGED_PORT)")
    parser.set_defaults(run=_status)


def _tasks(args: argparse.Namespace) -> int:
    return list_tasks(_settings(args), args.task, sys.stdout, url=args.url)


def _add_tasks(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tasks", help="list the daemon's published tasks, or show one")
    parser.add_argument("task", nargs="?", help="a task id (default: a table of all tasks)")
    parser.add_argument("--url", help="the daemon's URL (default: http://EDGED_HOST:EDGED_PORT)")
    parser.set_defaults(run=_tasks)


def _predict(args: argparse.Namespace) -> int:
    return predict(_settings(args), args.task, args.files, args.text, args.top_k, sys.stdout, url=args.url)


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="top-k classes of images, an .npz or texts on a published task")
    parser.add_argument("task", help="a task id (`edged tasks` lists them)")
    parser.add_argument("files", nargs="*", type=Path, help="image files (PNG, JPEG, ...) or one .npz with 'x'")
    parser.add_argument("--text", action="append", help="a text to classify (repeat for more), for a text task")
    parser.add_argument("--top-k", type=int, default=3, help="classes shown per input (default: 3)")
    parser.add_argument("--url", help="the daemon's URL (default: http://EDGED_HOST:EDGED_PORT)")
    parser.set_defaults(run=_predict)


BENCHMARKS = {
    "adapt": ("edged.bench.adapt", "methods on MNIST, 8x8 digits, BBC News over seeds: accuracy ± std, entries, time, verdicts"),
    "train-step": ("edged.bench.train_step", "ViT-B/16 training step: sparse delta vs PEFT LoRA vs full fine-tuning"),
    "sparse": ("edged.bench.sparse", "dense vs 2:4 latency per layer and end to end"),
    "api": ("edged.bench.api",
            "HTTP API under 1/10/50 closed-loop clients, idle and while a job trains: requests/s, p50/p95/p99"),
    "prune": ("edged.bench.prune", "2:4 accuracy: dense-adapted, one-shot by |W| and by task importance, with recovery"),
    "align": ("edged.bench.align", "masks aligned across tasks on one base: accuracy and the union of blocks, vs unaligned"),
    "int8": ("edged.bench.int8", "onnxruntime float32 vs INT8 (and INT8 + 2:4) on MobileNetV2 + MNIST: accuracy, p50/p99"),
    "switch": ("edged.bench.switch", "task switching: full weights vs PEFT LoRA vs edged deltas (cold/warm/hot, prefetch)"),
    "tokens": ("edged.bench.tokens", "token selection (TR-PTS) on MiniLM + BBC News, 128 tokens: accuracy, train and "
               "inference throughput per keep ratio"),
    "predict": ("edged.bench.predict", "predict latency on one task through the task server: eager vs its onnxruntime artifact"),
}


def _bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(BENCHMARKS[args.benchmark][0])
    try:
        return int(module.main(args.bench_args) or 0)
    except ValidationError as exc:  # a bench option outside what the job option it sets accepts (AdaptConfig's check)
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (given {e['input']!r})" for e in exc.errors())
        raise InvalidInput(f"edged bench {args.benchmark}: {problems}") from None


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="run a benchmark: prints a table and writes JSON",
        description="\n".join(f"{name}: {text}" for name, (_, text) in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="the benchmark's own options (see its --help)")
    parser.set_defaults(run=_bench)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_serve,
    _add_doctor,
    _add_demo,
    _add_submit,
    _add_status,
    _add_tasks,
    _add_predict,
    _add_bench,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edged", description="On-device sparse fine-tuning daemon.")
    parser.add_argument(
        "--env-file", type=Path, help="file of EDGED_*=value lines (default: EDGED_ENV_FILE, if set)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_subcommand in SUBCOMMANDS:
        add_subcommand(subparsers)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except EdgedError as exc:
        print(f"edged: error: {exc.message}", file=sys.stderr)
        return 2
