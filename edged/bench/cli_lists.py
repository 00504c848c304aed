"""argparse `type=` factories for the benches' comma-separated number lists ("1,8,32"), single numbers (counts,
bounded numbers, an image size) and device names: a bad value is refused with argparse's one-line `error:`, naming
the value and what is accepted, before any work starts, never a traceback."""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Optional

from pydantic import BaseModel

from edged.data.preprocess import IMAGE_SIZE_RANGE
from edged.devices import ACCEPTED as ACCEPTED_DEVICES
from edged.devices import resolve_device
from edged.errors import InvalidInput, Unavailable


def items(text: str, accepted: str) -> list[str]:
    """`text`'s comma-separated items, stripped; an empty list or an empty item is refused."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise argparse.ArgumentTypeError(f"an empty list; accepted: {accepted}")
    if not all(parts):
        raise argparse.ArgumentTypeError(f"an empty item in {text!r}; accepted: {accepted}")
    return parts


def _each(text: str, accepted: str, value_of: Callable[[str, list], tuple[Any, str]]) -> list:
    """`text`'s items as `value_of(item, values so far)` reads them: (value, "") or (_, why it is refused)."""
    values: list = []
    for item in items(text, accepted):
        value, why = value_of(item, values)
        if why:
            raise argparse.ArgumentTypeError(f"{item!r} {why}; accepted: {accepted}")
        values.append(value)
    return values


def _bounds(minimum: Optional[float], maximum: Optional[float], open_minimum: bool = False) -> str:
    """' > 0 and <= 1', ' >= 1' or '' (no bounds): what follows "numbers" or "an integer" in a message."""
    bounds = [f"{'>' if open_minimum else '>='} {_shown(minimum)}"] if minimum is not None else []
    bounds += [f"<= {_shown(maximum)}"] if maximum is not None else []
    return " " + " and ".join(bounds) if bounds else ""


def _shown(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"  # 65535, not 6.5535e+04; 0.5 and 1000, not 1000.0


def _within(value: float, minimum: Optional[float], maximum: Optional[float], open_minimum: bool) -> bool:
    low_ok = minimum is None or (value > minimum if open_minimum else value >= minimum)
    return low_ok and (maximum is None or value <= maximum)


def int_list(minimum: int = 1, *, distinct: bool = False, example: Optional[str] = None) -> Callable[[str], list[int]]:
    """Comma-separated integers >= `minimum` (`distinct`: each at most once)."""
    example = example or ",".join(str(minimum + i) for i in range(3))
    accepted = f"{'distinct ' if distinct else ''}comma-separated integers >= {minimum}, e.g. {example}"

    def value_of(item: str, seen: list) -> tuple[Optional[int], str]:
        try:
            value = int(item)
        except ValueError:
            return None, "is not an integer"
        if value < minimum:
            return value, "is out of range"
        return value, "is given twice" if distinct and value in seen else ""

    return lambda text: _each(text, accepted, value_of)


def count(minimum: int = 1, maximum: Optional[int] = None) -> Callable[[str], int]:
    """One integer in [minimum, maximum] (samples, epochs, a batch size, a seed, threads), refused before any work
    starts."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if not _within(value, minimum, maximum, False):
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer{_bounds(minimum, maximum)}")
        return value

    return parse


def number(minimum: Optional[float] = None, maximum: Optional[float] = None, *,
           open_minimum: bool = False) -> Callable[[str], float]:
    """One finite number within [minimum, maximum] ((minimum, maximum] with `open_minimum`): nan and inf are
    refused, as no budget, fraction or duration means them."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        finite = math.isfinite(value)  # not: 'x', nan, inf
        if not (finite and _within(value, minimum, maximum, open_minimum)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a' if finite else 'a finite'} number"
                                             f"{_bounds(minimum, maximum, open_minimum)}")
        return value

    return parse


IMAGE_SIZE = count(*IMAGE_SIZE_RANGE)  # the image side every image model's preprocessing accepts (check_image_size)


def device_name(text: str) -> str:
    """A device name `resolve_device` knows (auto, cpu, cuda, cuda:N), kept as given: a bench hands the name on (to
    AdaptConfig.device, into its JSON). A CUDA name on a machine without CUDA passes here: the run that uses the
    device refuses it, and a run that does not (switch --layouts) has no need to."""
    try:
        resolve_device(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(f"{exc.message}; accepted: {ACCEPTED_DEVICES}") from None
    except Unavailable:
        pass
    return text


def float_list(minimum: Optional[float] = None, maximum: Optional[float] = None, *, open_minimum: bool = False,
               example: str) -> Callable[[str], list[float]]:
    """Comma-separated finite numbers within [minimum, maximum] ((minimum, maximum] with `open_minimum`)."""
    accepted = f"comma-separated numbers{_bounds(minimum, maximum, open_minimum)}, e.g. {example}"

    def value_of(item: str, _seen: list) -> tuple[float, str]:
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            return value, "is not a finite number"
        return value, "" if _within(value, minimum, maximum, open_minimum) else "is out of range"

    return lambda text: _each(text, accepted, value_of)


def _field_bounds(model: type[BaseModel], field: str) -> dict[str, Any]:
    """The bounds (ge or gt, le) the pydantic `model` sets on `field`, as `count`, `number` and `float_list` take
    them, so a bench's option accepts what the setting or job option it sets accepts."""
    bounds: dict[str, Any] = {}
    for limit in model.model_fields[field].metadata:  # annotated_types' Ge, Gt, Le
        if hasattr(limit, "ge"):
            bounds["minimum"] = limit.ge
        elif hasattr(limit, "gt"):
            bounds.update(minimum=limit.gt, open_minimum=True)
        elif hasattr(limit, "le"):
            bounds["maximum"] = limit.le
        else:
            raise TypeError(f"{model.__name__}.{field}: no option bounds for {limit!r}")
    return bounds


def field_count(model: type[BaseModel], field: str) -> Callable[[str], int]:
    """`count` within the integer `field`'s bounds."""
    return count(**_field_bounds(model, field))


def field_number(model: type[BaseModel], field: str) -> Callable[[str], float]:
    """`number` within the `field`'s bounds."""
    return number(**_field_bounds(model, field))


def field_float_list(model: type[BaseModel], field: str, *, example: str) -> Callable[[str], list[float]]:
    """`float_list` within the `field`'s bounds, so a bench's list accepts what the setting or option it sweeps
    accepts."""
    return float_list(**_field_bounds(model, field), example=example)
