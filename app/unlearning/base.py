"""The interface every unlearning method implements.

``forget(model, target, params, data, progress) -> model`` receives a private copy of the
source model (it may modify it in place) and returns the model to publish. ``params`` is
the method's own pydantic model, already validated, so each method declares and checks its
parameters in one place and the request shape stays the same for all methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import BaseModel, ConfigDict
from torch import nn

from app.ml.data import MnistData

ProgressCallback = Callable[[float], None]


@dataclass(frozen=True)
class ForgetTarget:
    """What to forget: whole classes, and/or individual training samples by official ID."""

    classes: tuple[int, ...] = ()
    sample_ids: tuple[int, ...] = field(default=())

    @property
    def is_empty(self) -> bool:
        return not self.classes and not self.sample_ids


class MethodParams(BaseModel):
    """Base for each method's parameters: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class UnlearningMethod:
    """Subclasses set the class attributes and implement ``forget``."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[MethodParams]]
    supports_classes: ClassVar[bool] = True
    supports_samples: ClassVar[bool] = True
    # False when only the output layer changes: metrics may reuse cached penultimate features.
    changes_backbone: ClassVar[bool] = True

    def forget(self, model: nn.Module, target: ForgetTarget, params: MethodParams,
               data: MnistData, progress: ProgressCallback) -> nn.Module:
        raise NotImplementedError
