"""argparse `type=` factories for the benches' comma-separated number lists ("1,8,32") and counts: a bad item is
refused with argparse's one-line `error:`, naming the item and what is accepted, never a traceback."""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Optional

from pydantic import BaseModel


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


def count(minimum: int = 1) -> Callable[[str], int]:
    """One integer >= `minimum` (samples, epochs, a batch size, timed iterations), refused before any work starts."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
        return value

    return parse


def float_list(minimum: Optional[float] = None, maximum: Optional[float] = None, *, open_minimum: bool = False,
               example: str) -> Callable[[str], list[float]]:
    """Comma-separated finite numbers within [minimum, maximum] ((minimum, maximum] with `open_minimum`)."""
    bounds = [f"{'>' if open_minimum else '>='} {minimum:g}"] if minimum is not None else []
    bounds += [f"<= {maximum:g}"] if maximum is not None else []
    accepted = f"comma-separated numbers{' ' + ' and '.join(bounds) if bounds else ''}, e.g. {example}"

    def value_of(item: str, _seen: list) -> tuple[float, str]:
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            return value, "is not a finite number"
        low_ok = minimum is None or (value > minimum if open_minimum else value >= minimum)
        return value, "" if low_ok and (maximum is None or value <= maximum) else "is out of range"

    return lambda text: _each(text, accepted, value_of)


def field_float_list(model: type[BaseModel], field: str, *, example: str) -> Callable[[str], list[float]]:
    """`float_list` within the bounds (ge or gt, le) that the pydantic `model` sets on `field`, so a bench's list
    accepts what the setting or option it sweeps accepts."""
    bounds: dict[str, Any] = {}
    for limit in model.model_fields[field].metadata:  # annotated_types' Ge, Gt, Le
        if hasattr(limit, "ge"):
            bounds["minimum"] = float(limit.ge)
        elif hasattr(limit, "gt"):
            bounds.update(minimum=float(limit.gt), open_minimum=True)
        elif hasattr(limit, "le"):
            bounds["maximum"] = float(limit.le)
        else:
            raise TypeError(f"{model.__name__}.{field}: no list bounds for {limit!r}")
    return float_list(**bounds, example=example)
