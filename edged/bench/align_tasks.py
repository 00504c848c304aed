"""The tasks `edged bench align` adapts on one base: label groupings of the same MNIST digits."""

from __future__ import annotations

import torch

from edged.data.task import TaskData

GROUPINGS = {  # task -> (class names, label of each digit 0..9)
    "digits": ([str(d) for d in range(10)], list(range(10))),
    "parity": (["even", "odd"], [d % 2 for d in range(10)]),
    "halves": (["0-4", "5-9"], [int(d >= 5) for d in range(10)]),
    "mod3": (["0", "1", "2"], [d % 3 for d in range(10)]),
    "mod4": (["0", "1", "2", "3"], [d % 4 for d in range(10)]),
}


def grouping_task(digits: TaskData, grouping: str) -> TaskData:
    classes, of_digit = GROUPINGS[grouping]
    return TaskData("image", digits.x, torch.tensor(of_digit)[digits.y], classes)
