"""Adaptation methods, one small package each, all in one registry (see registry.py)."""

from edged.methods.registry import MethodEntry, all_methods, get_method

__all__ = ["MethodEntry", "all_methods", "get_method"]
