"""Acceptance criteria: what a forget request's new version must show before it is
certified, and the evaluation of those criteria on the request's measured figures.

Defaults are per target kind (settings ``UNLEARN_ACCEPTANCE_*``); a request may override
any of them under ``"acceptance"``. The thresholds resolved at filing time are stored on
the request, so a later change of the defaults never rewrites what a request was held to.

* ``forget_class_test_accuracy`` (class targets): test accuracy on the forgotten classes
  <= ``forget_accuracy_max`` (default 0.01; chance level is 1 / number of classes).
* ``retained_test_accuracy_drop`` (every target): test accuracy on everything not
  forgotten may fall by at most ``retain_drop_max`` (default 0.01, one point) below the
  source version's.
* ``forget_membership_flagged`` (sample targets): the per-sample membership test
  (``lira``) must not flag more forgotten samples at false-positive rate
  ``membership_fpr`` (default 0.01) than never-seen samples would be flagged by chance:
  at most the (1 - ``membership_significance``) quantile of Binomial(n, fpr).

A criterion whose evidence is missing (no shadow bank for the per-sample test, no test
images of a class) is reported ``"available": false`` and does not pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.config import Settings
from app.core.errors import InvalidInputError

FORGET_CLASS_ACCURACY = "forget_class_test_accuracy"
RETAINED_ACCURACY_DROP = "retained_test_accuracy_drop"
FORGET_MEMBERSHIP = "forget_membership_flagged"


class AcceptanceOverrides(BaseModel):
    """Per-request overrides of the default criteria (``"acceptance"`` in the POST body)."""

    model_config = ConfigDict(extra="forbid")

    forget_accuracy_max: float | None = Field(
        default=None, ge=0.0, le=1.0, allow_inf_nan=False,
        description="Class targets: highest test accuracy on the forgotten classes.")
    retain_drop_max: float | None = Field(
        default=None, ge=0.0, le=1.0, allow_inf_nan=False,
        description="Largest fall of test accuracy on the other data, vs the source version.")
    membership_fpr: float | None = Field(
        default=None, gt=0.0, le=0.5, allow_inf_nan=False,
        description="Sample targets: false-positive rate of the per-sample membership test.")
    membership_significance: float | None = Field(
        default=None, gt=0.0, lt=0.5, allow_inf_nan=False,
        description="Sample targets: how unlikely the flagged count must be under 'never "
        "seen' before it counts as remembered.")


def resolve_acceptance(settings: Settings, classes: list[int], sample_ids: list[int],
                       overrides: AcceptanceOverrides | None) -> dict[str, Any]:
    """The thresholds this request is held to: defaults for its target kind, overridden
    per request. An override that does not apply to the target is a 422, not ignored."""
    given = overrides.model_dump(exclude_none=True) if overrides else {}
    if not classes and "forget_accuracy_max" in given:
        raise InvalidInputError("acceptance.forget_accuracy_max applies to class targets; "
                                "this request forgets sample IDs only",
                                "acceptance.forget_accuracy_max")
    for name in ("membership_fpr", "membership_significance"):
        if not sample_ids and name in given:
            raise InvalidInputError(f"acceptance.{name} applies to sample targets; this "
                                    f"request forgets classes only", f"acceptance.{name}")
    resolved: dict[str, Any] = {}
    if classes:
        resolved["forget_accuracy_max"] = given.get(
            "forget_accuracy_max", settings.acceptance_classes_forget_accuracy_max)
    default_drop = (settings.acceptance_classes_retain_drop_max if classes
                    else settings.acceptance_samples_retain_drop_max)
    resolved["retain_drop_max"] = given.get("retain_drop_max", default_drop)
    asked = "membership_fpr" in given or "membership_significance" in given
    if sample_ids and (settings.acceptance_samples_require_membership or asked):
        resolved["membership_fpr"] = given.get("membership_fpr",
                                               settings.acceptance_samples_membership_fpr)
        resolved["membership_significance"] = given.get(
            "membership_significance", settings.acceptance_samples_membership_significance)
    return resolved


def criterion(name: str, threshold: float | None, value: float | None, passed: bool,
              available: bool = True, note: str | None = None, **extra) -> dict[str, Any]:
    return {"name": name, "threshold": threshold, "value": value, "passed": passed,
            "available": available, "note": note, **extra}


def not_available(name: str, threshold: float | None, reason: str) -> dict[str, Any]:
    return criterion(name, threshold, None, False, available=False,
                     note=f"not available: {reason}")


def _accuracy(metrics: Mapping[str, Any] | None, named_set: str) -> float | None:
    section = (metrics or {}).get(named_set)
    return None if section is None else section.get("accuracy")


def accuracy_criteria(acceptance: dict[str, Any], before: Mapping[str, Any],
                      after: Mapping[str, Any]) -> list[dict]:
    """The criteria measured on the test split: forgotten-class accuracy and the drop on
    the rest."""
    results = []
    if "forget_accuracy_max" in acceptance:
        threshold = acceptance["forget_accuracy_max"]
        value = _accuracy(after, "test_forget")
        if value is None:
            results.append(not_available(FORGET_CLASS_ACCURACY, threshold,
                                         "no test images of the forgotten classes"))
        else:
            results.append(criterion(FORGET_CLASS_ACCURACY, threshold, round(value, 4),
                                     value <= threshold,
                                     source_value=_rounded(_accuracy(before, "test_forget"))))
    threshold = acceptance["retain_drop_max"]
    source, result = _accuracy(before, "test_retain"), _accuracy(after, "test_retain")
    if source is None or result is None:
        results.append(not_available(RETAINED_ACCURACY_DROP, threshold,
                                     "no test images outside the forgotten classes"))
    else:
        drop = source - result
        # Rounded to a 1e-9 so that float noise cannot fail an unchanged model.
        results.append(criterion(RETAINED_ACCURACY_DROP, threshold, round(drop, 4),
                                 round(drop, 9) <= threshold, source_value=round(source, 4),
                                 result_value=round(result, 4)))
    return results


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
