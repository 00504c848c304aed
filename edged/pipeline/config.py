"""The job's config, defined once: the fields a job request may set, the whole adaptation config, and the
typed JobConfig that the daemon stores and the worker reads back (JSON in `jobs.config`).

Adding a job field means one line in `JobFields` (or `ModelOptions`) and the stage that reads it: the
request schema (`edged.jobs.request.JobCreate`), the stored config and the worker all take it from here.
Method options (k, allocation, nm, lora_rank) are declared by the methods themselves
(`edged.methods.options`) and composed into AdaptConfig; a method is handed
`entry.options.model_validate(config.model_dump())`, its own class.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StringConstraints, ValidationInfo, field_validator

from edged.errors import InvalidInput
from edged.methods.options import MaskedLowRankOptions, MethodOptions
from edged.methods.registry import all_methods, methods_keeping_2_4
from edged.models.token_selection import ACCEPTED_KEEP, check_token_keep

Sparsity = Literal["none", "2:4"]
LearningRate = Annotated[float, Field(gt=0.0, le=1.0)]
Quantize = Literal["none", "int8"]


class JobFields(MethodOptions):
    """The adaptation fields a job request may set (`budget` and `seed` are every method's options)."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field("taskedge", description="a registered adaptation method or baseline")
    epochs: int = Field(3, ge=1, le=1000, description="training epochs ('head' fits its head once, to "
                        "convergence, on features the frozen backbone computes once)")
    lr: Union[LearningRate, Literal["auto"], None] = Field(
        "auto", description="learning rate of the backbone part: a number, 'auto' (chosen by a short search on the "
        "training samples, at most ~15 % of the training time: metrics.lr_search) or null (the method's default); "
        "a number is refused for 'head', which trains no backbone part")
    head_lr: Union[LearningRate, Literal["auto"]] = Field(
        "auto", description="learning rate of the classification head: a number, or 'auto' (searched with lr); a "
        "number is refused for 'head', whose head is fit by L-BFGS on cached features with a weight decay chosen on "
        "part of the training split (no learning rate to set)")
    head_warmup: bool = Field(
        False, description="LP-FT: before training a method that trains a backbone part, fit the head as a linear "
        "probe on the frozen backbone's cached features (as 'head' does), then train from there")
    refit_head: bool = Field(
        True, description="after a method that trains a backbone part, refit the head as a linear probe on the adapted "
        "backbone's features of the training samples (L-BFGS, weight decay chosen on part of the training split): "
        "metrics.head_refit. No effect for 'head', which fits its head that way already")
    batch_size: int = Field(32, ge=1, le=4096, description="training batch size")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of the data held out for validation")
    memory_budget_mb: Optional[float] = Field(
        None, gt=0.0, description="peak memory allowed for the calibration pass above the loaded model, in MiB "
        "(a job's default: EDGED_DEFAULT_MEMORY_BUDGET_MB); when the job sets it, also training's whole peak "
        "(CUDA allocator, or the worker's resident set on CPU): the recomputation policy and micro-batch are chosen "
        "by measured probes to fit it (metrics.training_memory)",
    )
    sparsity: Sparsity = Field("none", description="prune to 2:4 before training")
    quantize: Quantize = Field(
        "none", description="'int8': the compiled model runs INT8 (explicit-quantization ONNX: int8 per-channel weights, "
        "activation scales from the calibration pass, re-measured on the adapted model); needs compile 'onnxruntime', "
        "'tensorrt' or 'auto'",
    )
    align_strength: float = Field(
        0.0, ge=0.0, le=10.0, description="prefer the 16-wide row blocks that earlier tasks on the same base use: an "
        "entry in such a block scores (1 + align_strength) times its importance, so tasks share blocks (0: off)",
    )
    dense_reference: bool = Field(
        True, description="with sparsity '2:4': first adapt the unpruned model the same way, so the metrics show "
        "what 2:4 costs (accuracy_dense_adapted); doubles the training time",
    )
    distill_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="with sparsity '2:4' and the dense reference: share of the recovery loss "
        "spent on matching the dense reference's outputs (knowledge distillation; 0 = labels only)",
    )
    share_2_4: bool = Field(
        True, description="with sparsity '2:4': prune to the 2:4 pattern the tasks on the same base share (the "
        "first sharing 2:4 task on a base sets it from its own importance), so a switch between them changes values "
        "only; false: this job's own pattern from its own importance",
    )

    @field_validator("method")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value not in all_methods():
            raise ValueError(f"unknown method {value!r}; accepted: {', '.join(all_methods())}")
        return value

    @field_validator("lr")
    @classmethod
    def _used_by_method(cls, value: Union[float, str, None], info: ValidationInfo) -> Union[float, str, None]:
        """A backbone learning rate for a method that trains no backbone part would be silently ignored."""
        method = info.data.get("method")  # absent when the method itself was refused
        if isinstance(value, float) and method is not None and not all_methods()[method].trains_backbone:
            raise ValueError(f"method {method!r} trains only the classification head, fit on cached features without "
                             f"a learning rate, so 'lr' (like 'head_lr') would have no effect; leave it out")
        return value

    @field_validator("head_lr")
    @classmethod
    def _used_by_head_fit(cls, value: Union[float, str], info: ValidationInfo) -> Union[float, str]:
        """A number for a method whose head is fit on cached features would be silently ignored: that fit is
        full-batch L-BFGS, whose step comes from its line search."""
        method = info.data.get("method")
        if isinstance(value, float) and method is not None and not all_methods()[method].trains_backbone:
            raise ValueError(f"method {method!r} fits the head on cached backbone features by L-BFGS, with a weight "
                             f"decay chosen on part of the training split, so 'head_lr' would have no effect; leave "
                             f"it out")
        return value

    @field_validator("head_warmup")
    @classmethod
    def _warms_a_trained_head(cls, value: bool, info: ValidationInfo) -> bool:
        method = info.data.get("method")
        if value and method is not None and not all_methods()[method].trains_backbone:
            raise ValueError(f"method {method!r} fits only the head, on cached features already; head_warmup applies "
                             f"to methods that train a backbone part")
        return value

    @field_validator("sparsity")
    @classmethod
    def _kept_by_method(cls, value: str, info: ValidationInfo) -> str:
        """2:4 only with methods whose updates keep the pattern (the registry says which)."""
        method = info.data.get("method")  # absent when the method itself was refused
        if value == "2:4" and method is not None and not all_methods()[method].keeps_2_4:
            raise ValueError(f"sparsity '2:4' cannot be kept by method {method!r}: it writes dense updates into "
                             f"pruned weights; methods that keep it: {', '.join(methods_keeping_2_4())}")
        return value

    @property
    def prunes_2_4(self) -> bool:
        return self.sparsity == "2:4"


class AdaptConfig(JobFields, MaskedLowRankOptions):
    """Everything one adaptation reads: the job fields, the method options, training and device settings.
    A job request leaves the fields below (and the method options) at these defaults; the library and
    `edged bench` may set them."""

    model_config = ConfigDict(extra="forbid")  # JobFields' rule (the method options ignore extras)

    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay")
    schedule: Literal["cosine", "onecycle"] = Field("cosine", description="warm-up + cosine, or one-cycle")
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of steps spent warming up")
    patience: int = Field(3, ge=1, description="epochs without validation improvement before stopping early")
    calibration_samples: int = Field(512, ge=1, description="training samples used for calibration/scoring")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda[:i]'")
    amp: bool = Field(True, description="mixed precision on CUDA (bf16 where supported, else fp16)")
    training_memory_budget_mb: Optional[float] = Field(
        None, gt=0.0, description="the whole peak training may reach, in MiB (edged.train.memory_plan): a job's own "
        "memory_budget_mb; None trains without recomputation")
    cuda_graph: bool = Field(True, description="on CUDA, replay the training step's forward and backward from one "
                             "CUDA graph for the fixed-shape batches (edged.train.graphed_step); False: eager steps")
    reestimate_batchnorm: bool = Field(True, description="after training, re-estimate BatchNorm statistics on the "
                                       "calibration samples when the method trained with BatchNorm in train mode "
                                       "(kept unless they score lower on those training samples)")


WeightKeyPrefix = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class ModelOptions(BaseModel):
    """How the model is built for the task: its preprocessing options, the weights file keys it drops, and a text
    model's token selection. They travel in the job's `model_options`, with which a published task rebuilds its
    base."""

    image_size: Optional[int] = Field(None, description="input resolution of an image model (default: the model's)")
    max_length: Optional[int] = Field(None, description="token limit of a text model (default: the model's)")
    drop_weight_keys: list[WeightKeyPrefix] = Field(
        default_factory=list, max_length=32, description="for a 'package.module:factory=weights' model: drop the "
        "weights file's keys that start with one of these prefixes before loading (e.g. ['_fc.'] for a checkpoint "
        "that keeps its classifier); each must match a key the backbone does not have",
    )
    token_keep: Optional[Union[StrictInt, StrictFloat]] = Field(
        None, description=f"text models, TR-PTS token selection: tokens each text keeps after token_layer, {ACCEPTED_KEEP}; "
        "the rest are merged into one token, so later layers run on fewer tokens (in training and when the task "
        "predicts); needs compile 'none' (default: all tokens)",
    )
    token_layer: Optional[int] = Field(
        None, ge=0, description="text models: the encoder layer whose attention picks the kept tokens; the layers "
        "after it run on them (needs token_keep; default 1)",
    )

    @field_validator("token_keep", mode="before")  # before the union's per-type errors: one message, with what fits
    @classmethod
    def _keep_accepted(cls, value: Any) -> Any:
        try:
            if value is not None:
                check_token_keep(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from exc
        return value

    @field_validator("token_layer")
    @classmethod
    def _layer_needs_keep(cls, value: Optional[int], info: ValidationInfo) -> Optional[int]:
        if value is not None and info.data.get("token_keep") is None:
            raise ValueError("token_layer has no effect without token_keep (the tokens to keep)")
        return value


class JobConfig(BaseModel):
    """What the worker runs: stored as JSON in `jobs.config` at submission, read back by the worker."""

    model_config = ConfigDict(extra="forbid")

    adapt: AdaptConfig
    model_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options of the model loader: image_size / max_length, and for a "
        "user factory `kind` (image or tabular: the dataset's kind) and drop_weight_keys when set")
    compile: str = Field("none", description="compile backend ('auto', a backend name) or 'none'")
    publish: bool = Field(True, description="publish the adapted model as a task (GET /v1/tasks) when the job succeeds")
    test_dataset: Optional[str] = Field(None, description="id of the held-out test dataset, or null")
