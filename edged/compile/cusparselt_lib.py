"""ctypes binding to cuSPARSELt: compress a 2:4 weight once, build one plan per token count, reuse.

Why not `torch._cslt_sparse_mm`: PyTorch (<= 2.11) builds the matrix descriptors, the algorithm
selection and the matmul plan again on EVERY call and destroys them after it. On the H100 with
cuSPARSELt 0.8 a ViT-B/16 layer then costs 0.66-1.24 ms per call through PyTorch against 0.06-0.39 ms
through a kept plan, eager (`edged bench sparse`, README "2:4 latency and energy on the H100"); the first plan of a process
takes ~270 ms (kernel loading). Here the descriptors and the plan of one (weight, token count) are
built once; a forward is one `cusparseLtMatmul` launch on the current stream, which a CUDA graph
can capture.

The library is the copy PyTorch itself loaded (found in /proc/self/maps), else the system's or the
`nvidia-cusparselt` wheel's. Functions and enums are those of cusparseLt.h 0.6 to 0.10, which agree;
only the opaque structs' sizes differ (13072 bytes in 0.6, 1024 in 0.7, 512 from 0.8), so every
opaque struct gets OPAQUE_BYTES, the largest.

Layout: the sparse operand comes first, so y (T, out) = x (T, in) W^T is computed as
D = W X^T with W row-major (out, in), X^T the column-major view of x (in, T) and D column-major
(out, T), which is y row-major: no transposes, no copies. The bias is per row of D (per output).
With `KernelConfig.feature_major` D is (out, T) row-major instead, and one tiled copy makes y, unless the caller
takes D as it is (`chain`): a next layer with `KernelConfig.input_feature_major` reads it as its X^T, (in, T)
row-major, so a chain of 2:4 layers stays feature-major with no copy between them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from edged.compile.row_major import row_major

OPAQUE_BYTES = 13072  # the largest opaque struct of any supported version (0.6)
ALIGN_BYTES = 16  # cuSPARSELt requires 16-byte aligned opaque structs and device pointers
MIN_VERSION = 600  # 0.6.0: the first with the enums and *2 compression functions used here

# enums from cusparseLt.h / cusparse.h / library_types.h
CUDA_R_16F, CUDA_R_16BF = 2, 14
ORDER_COL, ORDER_ROW = 1, 2
OP_NON_TRANSPOSE = 0
COMPUTE_32F = 2
SPARSITY_50_PERCENT = 0
MATMUL_BIAS_POINTER = 8
ALG_DEFAULT = 0
ALG_CONFIG_ID, ALG_CONFIG_MAX_ID, ALG_SPLIT_K, ALG_SPLIT_K_MODE = 0, 1, 3, 4

VALUE_TYPES = {torch.float16: CUDA_R_16F, torch.bfloat16: CUDA_R_16BF}

_P, _I, _I64, _U32, _SZ = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_uint32, ctypes.c_size_t
SIGNATURES: dict[str, list] = {  # every argument typed, so 64-bit pointers are never truncated
    "cusparseLtInit": [_P],
    "cusparseLtGetVersion": [_P, _P],
    "cusparseLtDenseDescriptorInit": [_P, _P, _I64, _I64, _I64, _U32, _I, _I],
    "cusparseLtStructuredDescriptorInit": [_P, _P, _I64, _I64, _I64, _U32, _I, _I, _I],
    "cusparseLtMatDescriptorDestroy": [_P],
    "cusparseLtMatmulDescriptorInit": [_P, _P, _I, _I, _P, _P, _P, _P, _I],
    "cusparseLtMatmulDescSetAttribute": [_P, _P, _I, _P, _SZ],
    "cusparseLtMatmulAlgSelectionInit": [_P, _P, _P, _I],
    "cusparseLtMatmulAlgSelectionDestroy": [_P],
    "cusparseLtMatmulAlgSetAttribute": [_P, _P, _I, _P, _SZ],
    "cusparseLtMatmulAlgGetAttribute": [_P, _P, _I, _P, _SZ],
    "cusparseLtMatmulPlanInit": [_P, _P, _P, _P],
    "cusparseLtMatmulPlanDestroy": [_P],
    "cusparseLtMatmulGetWorkspace": [_P, _P, _P],
    "cusparseLtSpMMACompressedSize2": [_P, _P, _P, _P],
    "cusparseLtSpMMACompress2": [_P, _P, _I, _I, _P, _P, _P, _P],
    "cusparseLtMatmul": [_P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _I],
    "cusparseLtMatmulSearch": [_P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _I],
}


class CusparseLtError(RuntimeError):
    """A cuSPARSELt call returned an error status, or the library is missing or too old."""


@dataclass(frozen=True)
class KernelConfig:
    """cuSPARSELt kernel choice; the defaults are the library's heuristic pick."""

    alg_id: int = 0
    split_k: int = 1
    split_k_mode: int = 0  # 0: the library's choice (only read when split_k > 1)
    # D written as (out, T) row-major, then copied to y (T, out) row-major (`row_major`): on sm_90 the kernels are
    # about twice as fast in that layout, which can be worth the copy (edged/compile/row_major.py)
    feature_major: bool = False
    # X^T read as (in, T) row-major: the input arrives feature-major (a chained layer's D, through an elementwise
    # activation), so it is read as it is instead of copied
    input_feature_major: bool = False


class Opaque:
    """A zeroed, 16-byte aligned block for one of cuSPARSELt's opaque structs."""

    def __init__(self) -> None:
        self._buffer = ctypes.create_string_buffer(OPAQUE_BYTES + ALIGN_BYTES)
        base = ctypes.addressof(self._buffer)
        self.ptr = ctypes.c_void_p(base + (-base) % ALIGN_BYTES)


def _library_path() -> str | None:
    """The libcusparseLt PyTorch loaded, else one the dynamic loader or the nvidia wheel has."""
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            if "libcusparseLt" in line:
                return line.split(maxsplit=5)[-1]
    except OSError:
        pass
    for candidate in ("libcusparseLt.so.0", ctypes.util.find_library("cusparseLt")):
        if candidate:
            try:
                ctypes.CDLL(candidate)
                return candidate
            except OSError:
                continue
    try:
        import nvidia

        for root in map(Path, nvidia.__path__):
            for found in sorted(root.glob("*/lib/libcusparseLt.so*")):
                return str(found)
    except ImportError:
        pass
    return None


class Library:
    """The loaded library with typed functions; `call` raises CusparseLtError on a bad status."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lib = ctypes.CDLL(path)
        for name, argtypes in SIGNATURES.items():
            fn = getattr(self.lib, name)
            fn.argtypes, fn.restype = argtypes, ctypes.c_int
        self.lib.cusparseLtGetErrorString.argtypes = [ctypes.c_int]
        self.lib.cusparseLtGetErrorString.restype = ctypes.c_char_p

    def call(self, name: str, *args: object) -> None:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            text = (self.lib.cusparseLtGetErrorString(status) or b"").decode(errors="replace")
            raise CusparseLtError(f"{name} failed with status {status} ({text})")


class Context:
    """One cuSPARSELt handle for one CUDA device of this process."""

    def __init__(self, library: Library, device: torch.device) -> None:
        self.library, self.device = library, device
        self.handle = Opaque()
        with torch.cuda.device(device):
            library.call("cusparseLtInit", self.handle.ptr)
        version = ctypes.c_int()
        library.call("cusparseLtGetVersion", self.handle.ptr, ctypes.byref(version))
        self.version = version.value  # MAJOR * 1000000 + MINOR * 100 + PATCH (0.8.1 -> 801, 0.10.0 -> 1000)
        if self.version < MIN_VERSION:
            raise CusparseLtError(f"cuSPARSELt {self.version} is older than the supported {MIN_VERSION} (0.6.0)")

    @property
    def version_text(self) -> str:
        major, rest = divmod(self.version, 1_000_000)
        return f"{major}.{rest // 100}.{rest % 100}"

    def call(self, name: str, *args: object) -> None:
        self.library.call(name, self.handle.ptr, *args)


_lock = threading.Lock()
_library: Library | None = None
_contexts: dict[int, Context] = {}


def context(device: torch.device) -> Context:
    """This process's handle for `device` (created on first use; raises CusparseLtError if absent)."""
    global _library
    index = device.index if device.index is not None else torch.cuda.current_device()
    with _lock:
        if _library is None:
            torch.cuda.init()  # PyTorch loads its cuSPARSELt with its CUDA libraries
            path = _library_path()
            if path is None:
                raise CusparseLtError("no libcusparseLt found (PyTorch's, the system's or the nvidia-cusparselt wheel's)")
            _library = Library(path)
        if index not in _contexts:
            _contexts[index] = Context(_library, torch.device("cuda", index))
        return _contexts[index]


def _stream_ptr() -> int:
    return torch.cuda.current_stream().cuda_stream


class CompressedWeight:
    """W (out, in), 2:4 along `in`, fp16 or bf16 on CUDA, in cuSPARSELt's compressed layout
    (kept values + metadata); the structured descriptor every plan of this weight uses."""

    def __init__(self, weight: Tensor) -> None:
        if weight.dtype not in VALUE_TYPES or not weight.is_cuda or weight.dim() != 2:
            raise CusparseLtError(
                f"need a 2-D fp16/bf16 CUDA weight, got {tuple(weight.shape)} {weight.dtype} on {weight.device}")
        weight = weight.detach().contiguous()
        self.ctx = context(weight.device)
        self.out_features, self.in_features = weight.shape
        self.dtype = weight.dtype
        self.desc = Opaque()
        self.ctx.call("cusparseLtStructuredDescriptorInit", self.desc.ptr, self.out_features, self.in_features,
                      self.in_features, ALIGN_BYTES, VALUE_TYPES[self.dtype], ORDER_ROW, SPARSITY_50_PERCENT)
        size, buffer_size = ctypes.c_size_t(), ctypes.c_size_t()
        self.ctx.call("cusparseLtSpMMACompressedSize2", self.desc.ptr, ctypes.byref(size), ctypes.byref(buffer_size))
        self.data = torch.empty(size.value, dtype=torch.uint8, device=weight.device)
        self._scratch_bytes = max(buffer_size.value, 1)
        self._compress_into_data(weight)

    def _compress_into_data(self, weight: Tensor) -> None:
        scratch = torch.empty(self._scratch_bytes, dtype=torch.uint8, device=weight.device)
        self.ctx.call("cusparseLtSpMMACompress2", self.desc.ptr, 1, OP_NON_TRANSPOSE, weight.data_ptr(),
                      self.data.data_ptr(), scratch.data_ptr(), _stream_ptr())
        torch.cuda.current_stream().synchronize()  # scratch is freed on return

    def recompress_(self, weight: Tensor) -> None:
        """New values (same shape, dtype and device; 2:4) compressed into this weight's own buffer, so the plans
        made for it, and CUDA graphs replaying them, read the new values without being rebuilt."""
        if tuple(weight.shape) != (self.out_features, self.in_features) or weight.dtype != self.dtype \
                or weight.device != self.data.device:
            raise CusparseLtError(f"recompressing needs a {(self.out_features, self.in_features)} {self.dtype} weight on "
                                  f"{self.data.device}, got {tuple(weight.shape)} {weight.dtype} on {weight.device}")
        self._compress_into_data(weight.detach().contiguous())

    def __del__(self) -> None:
        if hasattr(self, "desc"):
            self.ctx.library.lib.cusparseLtMatDescriptorDestroy(self.desc.ptr)


class SparseMatmulPlan:
    """y (T, out) = x (T, in) W^T + bias for ONE token count T: descriptors, algorithm and plan
    built here once; `__call__` launches only the matmul. T must be a multiple of 8 (fp16/bf16)."""

    def __init__(self, weight: CompressedWeight, tokens: int, bias: Tensor | None, config: KernelConfig | None = None) -> None:
        config = config or KernelConfig()
        self.weight, self.tokens, self.config = weight, tokens, config
        ctx, value_type = weight.ctx, VALUE_TYPES[weight.dtype]
        self.bias = None if bias is None else bias.detach().to(weight.dtype).contiguous()  # (out,)
        self.x_desc, self.y_desc = Opaque(), Opaque()
        # X^T: (in, T) column-major, leading dimension in, or row-major (leading dimension T) when the input is
        # feature-major; D: (out, T) column-major (leading dimension out), or row-major (leading dimension T)
        x_order, x_lead = (ORDER_ROW, tokens) if config.input_feature_major else (ORDER_COL, weight.in_features)
        ctx.call("cusparseLtDenseDescriptorInit", self.x_desc.ptr, weight.in_features, tokens, x_lead,
                 ALIGN_BYTES, value_type, x_order)
        y_order, y_lead = (ORDER_ROW, tokens) if config.feature_major else (ORDER_COL, weight.out_features)
        ctx.call("cusparseLtDenseDescriptorInit", self.y_desc.ptr, weight.out_features, tokens, y_lead,
                 ALIGN_BYTES, value_type, y_order)
        self.matmul = Opaque()
        ctx.call("cusparseLtMatmulDescriptorInit", self.matmul.ptr, OP_NON_TRANSPOSE, OP_NON_TRANSPOSE,
                 weight.desc.ptr, self.x_desc.ptr, self.y_desc.ptr, self.y_desc.ptr, COMPUTE_32F)
        if self.bias is not None:
            pointer = ctypes.c_void_p(self.bias.data_ptr())
            ctx.call("cusparseLtMatmulDescSetAttribute", self.matmul.ptr, MATMUL_BIAS_POINTER,
                     ctypes.byref(pointer), ctypes.sizeof(pointer))
        self.alg = Opaque()
        ctx.call("cusparseLtMatmulAlgSelectionInit", self.alg.ptr, self.matmul.ptr, ALG_DEFAULT)
        if config.alg_id:
            self._set_alg(ALG_CONFIG_ID, config.alg_id)
        if config.split_k > 1:
            self._set_alg(ALG_SPLIT_K, config.split_k)
            if config.split_k_mode:
                self._set_alg(ALG_SPLIT_K_MODE, config.split_k_mode)
        self.plan = Opaque()
        ctx.call("cusparseLtMatmulPlanInit", self.plan.ptr, self.matmul.ptr, self.alg.ptr)
        self._allocate_workspace()
        self._alpha, self._beta = ctypes.c_float(1.0), ctypes.c_float(0.0)
        self._streams = (ctypes.c_void_p * 1)()

    def _set_alg(self, attribute: int, value: int) -> None:
        data = ctypes.c_int(value)
        self.weight.ctx.call("cusparseLtMatmulAlgSetAttribute", self.alg.ptr, attribute, ctypes.byref(data), ctypes.sizeof(data))

    def _get_alg(self, attribute: int) -> int:
        data = ctypes.c_int()
        self.weight.ctx.call("cusparseLtMatmulAlgGetAttribute", self.alg.ptr, attribute, ctypes.byref(data), ctypes.sizeof(data))
        return data.value

    def _allocate_workspace(self) -> None:
        size = ctypes.c_size_t()
        self.weight.ctx.call("cusparseLtMatmulGetWorkspace", self.plan.ptr, ctypes.byref(size))
        self.workspace = torch.empty(size.value, dtype=torch.uint8, device=self.weight.data.device) if size.value else None

    @property
    def max_alg_id(self) -> int:
        return self._get_alg(ALG_CONFIG_MAX_ID)

    def _launch(self, function: str, x2d: Tensor) -> Tensor:
        layout = "feature-major, strides (1, T)" if self.config.input_feature_major else "contiguous"
        laid_out = x2d.t().is_contiguous() if self.config.input_feature_major else x2d.is_contiguous()
        if x2d.shape != (self.tokens, self.weight.in_features) or x2d.dtype != self.weight.dtype or not laid_out:
            raise CusparseLtError(f"plan for ({self.tokens}, {self.weight.in_features}) {self.weight.dtype} {layout}, "
                                  f"got {tuple(x2d.shape)} {x2d.dtype} strides {x2d.stride()}")
        if self.config.feature_major:  # D (out, T) row-major, seen as y (T, out) with strides (1, T)
            y = torch.empty(self.weight.out_features, self.tokens, dtype=x2d.dtype, device=x2d.device).t()
        else:
            y = torch.empty(self.tokens, self.weight.out_features, dtype=x2d.dtype, device=x2d.device)  # (T, out)
        self._streams[0] = _stream_ptr()
        workspace = self.workspace.data_ptr() if self.workspace is not None else None
        self.weight.ctx.call(function, self.plan.ptr, ctypes.byref(self._alpha), self.weight.data.data_ptr(),
                             x2d.data_ptr(), ctypes.byref(self._beta), y.data_ptr(), y.data_ptr(), workspace,
                             self._streams, 1)
        return y

    def __call__(self, x2d: Tensor, chain: bool = False) -> Tensor:
        """(T, in) -> (T, out): row-major, or with `chain` a feature-major D as it is (strides (1, T)) for a next
        layer that reads it so."""
        y = self._launch("cusparseLtMatmul", x2d)
        return y if chain else row_major(y)

    def search(self, x2d: Tensor) -> KernelConfig:
        """cuSPARSELt's own search at this shape; the plan keeps the winner, which is returned."""
        self._launch("cusparseLtMatmulSearch", x2d)
        torch.cuda.current_stream().synchronize()
        self._allocate_workspace()  # the chosen kernel may need a different workspace
        self.config = KernelConfig(self._get_alg(ALG_CONFIG_ID), self._get_alg(ALG_SPLIT_K), self._get_alg(ALG_SPLIT_K_MODE),
                                   self.config.feature_major, self.config.input_feature_major)
        return self.config

    def __del__(self) -> None:
        lib = self.weight.ctx.library.lib
        for name, opaque in (("cusparseLtMatmulPlanDestroy", "plan"), ("cusparseLtMatmulAlgSelectionDestroy", "alg"),
                             ("cusparseLtMatDescriptorDestroy", "x_desc"), ("cusparseLtMatDescriptorDestroy", "y_desc")):
            if hasattr(self, opaque):
                getattr(lib, name)(getattr(self, opaque).ptr)
