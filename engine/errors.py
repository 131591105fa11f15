"""Errors the engine raises for bad inputs; each message names the file or tensor at fault."""

from __future__ import annotations


class EngineError(ValueError):
    """Base class: a user-facing problem with a model, its files or its configuration."""


class WeightsError(EngineError):
    """A checkpoint file or tensor is missing, truncated, of the wrong shape or type."""


class UnsupportedModelError(EngineError):
    """The checkpoint's architecture or an option in its config is not supported."""


class EngineUnavailable(EngineError):
    """What was asked for cannot run on this machine or build (no GPU, a CPU without the
    ISA a kernel needs, the C++ extension not built); callers record it as not run."""
