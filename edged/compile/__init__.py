"""Compile backends (tensorrt, cusparselt, onnxruntime, eager) and `auto` selection."""

from edged.compile.base import CompiledModel, CompileReport
from edged.compile.registry import available_backends, compile_model, resolve_backend

__all__ = ["CompiledModel", "CompileReport", "available_backends", "compile_model", "resolve_backend"]
