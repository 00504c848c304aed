"""A backbone with a linear classification head: the model edged adapts to a task."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from edged.data.task import Inputs, Kind


class Classifier(nn.Module):
    """`backbone` maps inputs to features (N, D); `head` maps features to logits (N, num_classes).

    Parameter names therefore start with `backbone.` or `head.`, which is how the adaptation
    core tells the (sparsely trained) backbone from the (always trained) head.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        kind: Kind,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.kind = kind
        self.head = nn.Linear(feature_dim, num_classes)
        reset_head_(self.head, generator)

    def forward(self, inputs: Optional[Inputs] = None, *, input_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None) -> Tensor:
        """images (N, 3, H, W) or text {input_ids, attention_mask: (N, L)} -> logits (N, num_classes).

        Text also comes as the two named tensors: that is how the exporters and backends call a model
        with dict inputs (`model(**inputs)`), and it names the exported graph's inputs after the
        tokenizer's outputs, which is what a caller of the artifact feeds.
        """
        if inputs is None:
            if input_ids is None or attention_mask is None:
                raise TypeError("Classifier needs inputs, or both input_ids and attention_mask")
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.head(self.backbone(inputs))


@torch.no_grad()
def reset_head_(head: nn.Linear, generator: Optional[torch.Generator] = None) -> None:
    """nn.Linear's default initialisation, U(-1/sqrt(D), 1/sqrt(D)), drawn from `generator` if given.

    Drawn on CPU and copied, so the values are the same whatever device the head is on.
    """
    bound = 1.0 / math.sqrt(head.in_features)
    for param in (head.weight, head.bias):
        values = torch.empty(param.shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
        param.copy_(values)
