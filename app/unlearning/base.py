"""The interface every unlearning method implements.

``forget(model, target, params, data, progress) -> model`` receives a private copy of the
source model (it may modify it in place) and returns the model to publish. ``params`` is
the method's own pydantic model, already validated, so each method declares and checks its
parameters in one place and the request shape stays the same for all methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from pydantic import BaseModel, ConfigDict
from torch import nn

from app.ml.data import ImageData
from app.ml.targets import ForgetTarget

ProgressCallback = Callable[[float], None]

HEAVY_QUEUE = "heavy"
LIGHT_QUEUE = "light"


def enter_phase(progress: ProgressCallback, name: str) -> None:
    """Announce a new phase ('importance', 'dampening', 'training epoch 2/3') to a progress
    callback that tracks phases (the executor's); a plain fraction callback ignores it.
    After this, the fractions passed to ``progress`` are fractions of this phase."""
    phase = getattr(progress, "phase", None)
    if phase is not None:
        phase(name)


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
    # Model kinds (registry ``kind``) the method can work on.
    model_kinds: ClassVar[tuple[str, ...]] = ("cnn",)
    # Job queue by resource: 'heavy' for a pass over the data (GPU-worthy), 'light' for
    # output-layer-only work that a small CPU worker finishes in milliseconds.
    queue: ClassVar[str] = HEAVY_QUEUE

    # True for methods that retrain from scratch without the data (marked on certificates).
    exact: ClassVar[bool] = False
    # True for methods that search their own parameters against the acceptance criteria
    # (``forget`` then takes a ``check``, see ``app.verification.calibration``).
    calibrates: ClassVar[bool] = False

    def forget(self, model: nn.Module, target: ForgetTarget, params: MethodParams,
               data: ImageData, progress: ProgressCallback) -> nn.Module:
        raise NotImplementedError

    def check_request(self, params: MethodParams, target: ForgetTarget, data: ImageData) -> None:
        """Refuse, at filing time, parameters that cannot work on this target (raise
        ``InvalidInputError``); most methods have nothing to check."""
