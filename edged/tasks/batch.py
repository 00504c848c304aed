"""One micro-batch on a resident base or a task's compiled artifact: each request's samples preprocessed exactly as
the task's training data was, one forward over the requests that can share it, and each request's answer (top-k,
latency, the backend that answered)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Union

import torch
from torch import Tensor

from edged.data.task import Inputs, TaskData, num_samples
from edged.errors import EdgedError, InvalidInput
from edged.tasks.inputs import Samples
from edged.tasks.compiled import Route


def model_inputs(preprocess: Callable[[TaskData], Inputs], samples: Samples, classes: list[str]) -> Inputs:
    """The samples through the base's own preprocessing (the path the job's data took), as unlabelled
    TaskData (its labels are placeholders nothing reads)."""
    labels = torch.zeros(len(samples), dtype=torch.int64)
    if isinstance(samples.x, list) and samples.x and isinstance(samples.x[0], Tensor):
        images: list[Tensor] = samples.x  # type: ignore[assignment]  # (C, H, W) each
        if all(image.shape == images[0].shape for image in images):
            return preprocess(TaskData("image", torch.stack(images), labels, classes, labelled=False))
        one_by_one = [preprocess(TaskData("image", image[None], labels[:1], classes, labelled=False)) for image in images]
        return torch.cat(one_by_one)  # type: ignore[arg-type]  # images preprocess to tensors
    return preprocess(TaskData(samples.kind, samples.x, labels, classes, labelled=False))  # type: ignore[arg-type]


class Forward(Protocol):
    """What a micro-batch runs: the resident base with the task active, or the task's compiled artifact."""

    def logits(self, inputs: Inputs) -> Tensor: ...  # (N, classes) float32 on the CPU


def run_forward(resident: Forward, requests: list[Inputs]) -> list[Union[Tensor, BaseException]]:
    """(N_i, classes) logits per request: one forward over all image / tabular requests together; text
    requests (padded to their own longest text) and a batch that fails run one request at a time, so one
    bad request fails alone."""
    if len(requests) > 1 and all(isinstance(x, Tensor) for x in requests):
        try:
            logits = resident.logits(torch.cat(requests))  # type: ignore[arg-type]
            sizes = [num_samples(x) for x in requests]
            return [_finite(part) for part in torch.split(logits, sizes)]
        except RuntimeError:
            pass  # retried one by one below, to find the request that does not fit
    return [_one(resident, x) for x in requests]


def _one(resident: Forward, inputs: Inputs) -> Union[Tensor, BaseException]:
    try:
        return _finite(resident.logits(inputs))
    except RuntimeError as exc:  # a shape the model cannot take: the request's fault
        return refused(exc)


def _finite(logits: Tensor) -> Union[Tensor, BaseException]:
    """(N, classes) logits, or the 422 for inputs that drive the model to NaN or inf (JSON cannot carry them)."""
    if bool(torch.isfinite(logits).all()):
        return logits
    return InvalidInput("the task's model gives NaN or infinite logits for these inputs: values far outside what it "
                        "was trained on?")


def refused(exc: Exception) -> EdgedError:
    """A request's inputs that preprocessing or the model cannot take, as the 422 that says why (an EdgedError as is)."""
    if isinstance(exc, EdgedError):
        return exc
    return InvalidInput(f"the inputs do not fit the task's model: {(str(exc).splitlines() or [''])[0][:200]}")


def answer(task: dict[str, Any], logits: Tensor, top_k: int, with_logits: bool, seconds: float,
           switch_seconds: float, batch_requests: int, route: Route,
           energy_j: Optional[float] = None) -> dict[str, Any]:
    """The predict response: top-k classes with probabilities per sample, where the time went, what answered,
    and the request's share of its micro-batch's energy (None without a power source)."""
    probabilities = torch.softmax(logits, dim=-1)  # (N, classes)
    k = min(top_k, probabilities.shape[1])
    values, indices = probabilities.topk(k, dim=-1)
    predictions = [[{"class": task["classes"][i], "index": i, "probability": p}
                    for i, p in zip(row_indices.tolist(), row_values.tolist())]
                   for row_values, row_indices in zip(values, indices)]
    body: dict[str, Any] = {"task": task["id"], "predictions": predictions, "latency_ms": seconds * 1000,
                            "switch_ms": switch_seconds * 1000, "batch_requests": batch_requests,
                            "backend": route.backend, "backend_reason": route.reason, "energy_j": energy_j}
    if with_logits:
        body["logits"] = logits.tolist()
    return body


