"""Verification of a forget request's new version, as the execution path calls it:

* ``run_method`` runs the method, handing calibrating methods (SSD) the request's
  validation check;
* ``verify_request`` evaluates the request's acceptance criteria on the measured figures
  and the per-sample membership test, and says what the evidence can and cannot show;
* ``train_shadow_bank`` builds a lineage's shadow bank (the ``unlearn shadows train``
  command).

A request whose criteria are not all met (a missing piece of evidence counts as not met)
ends ``unverified``: its version is stored for inspection but cannot be promoted and gets
no certificate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy.orm import Session
from torch import nn

from app.context import ServiceContext
from app.evaluation.metrics import RequestMetrics
from app.evaluation.service import ModelOutcomes
from app.ml.data import ImageData
from app.architectures.catalog import build_model
from app.registration import model_spec
from app.ml.training import TrainingRecipe
from app.registry.models import ModelVersion
from app.registry.service import get_version
from app.unlearning.base import ForgetTarget, MethodParams, ProgressCallback, UnlearningMethod
from app.verification.calibration import ValidationCheck
from app.verification.criteria import (
    FORGET_MEMBERSHIP,
    accuracy_criteria,
    criterion,
    not_available,
)
from app.verification.lira import (
    ShadowBanks,
    ShadowStatistics,
    allowed_flagged,
    model_figures,
    train_shadows,
)

logger = logging.getLogger("unlearn.verification")

CONTROL_IMAGES = 2_000
CONTROL_SEED = 0


def shadow_banks(ctx: ServiceContext) -> ShadowBanks:
    banks = ctx.extras.get("shadow_banks")
    if banks is None:
        banks = ctx.extras["shadow_banks"] = ShadowBanks(ctx.settings.shadow_root)
    return banks


def lineage_root(session: Session, version: ModelVersion) -> ModelVersion:
    """The version a lineage starts from (no parent): its shadow bank serves them all."""
    while version.parent_version is not None:
        version = get_version(session, version.model_name, version.parent_version)
    return version


def lineage_shadows(ctx: ServiceContext, source: ModelVersion, data: ImageData
                    ) -> tuple[ShadowStatistics | None, str | None]:
    """The shadow statistics for the source's lineage, or (None, why not)."""
    if source.kind != "cnn":
        return None, f"no shadow bank for models of kind {source.kind!r}"
    with ctx.db.session() as session:
        root = lineage_root(session, source)
    try:
        statistics = shadow_banks(ctx).get(source.model_name, root.version, data)
    except (OSError, ValueError) as error:
        return None, f"the shadow bank could not be read: {error}"
    if statistics is None:
        return None, (f"no shadow models for version {root.version} of {source.model_name!r} "
                      f"(run `unlearn shadows train --model {source.model_name}`)")
    if statistics.count < ctx.settings.shadow_min_count:
        return None, (f"{statistics.count} shadow model(s), fewer than the "
                      f"{ctx.settings.shadow_min_count} the test needs")
    return statistics, None


def run_method(ctx: ServiceContext, method: UnlearningMethod, working: nn.Module, *,
               target: ForgetTarget, params: MethodParams, data: ImageData,
               progress: ProgressCallback, acceptance: dict[str, Any],
               source: ModelVersion, source_model: nn.Module) -> nn.Module:
    """The method's ``forget``; a calibrating method also gets the validation check."""
    if method.calibrates and getattr(params, "calibrate", False):
        shadows, _ = lineage_shadows(ctx, source, data)
        check = ValidationCheck(source_model, data, target, acceptance, shadows)
        # A calibrating method's forget also takes the check (UnlearningMethod.calibrates).
        calibrating_forget: Callable[..., nn.Module] = method.forget
        return calibrating_forget(working, target, params, data, progress, check=check)
    return method.forget(working, target, params, data, progress)


def membership_evidence(statistics: ShadowStatistics, data: ImageData, target: ForgetTarget,
                        source_losses: tuple[np.ndarray, np.ndarray],
                        result_losses: tuple[np.ndarray, np.ndarray], fpr: float,
                        has_classes: bool) -> dict[str, Any]:
    """LiRA figures for the forgotten samples and a retained control, under the source and
    the new version. Never-seen reference: the test images of the forgotten classes for a
    class target (like for like), else the whole test set."""
    forget_positions = np.flatnonzero(target.forget_mask(data).numpy())
    retain = np.flatnonzero(target.retain_mask(data).numpy())
    rng = np.random.default_rng(CONTROL_SEED)
    control = np.sort(rng.choice(retain, size=min(CONTROL_IMAGES, len(retain)), replace=False))
    if has_classes:
        nonmember_test = np.isin(data.test_labels.numpy(), list(target.classes))
    else:
        nonmember_test = np.ones(len(data.test_labels), dtype=bool)
    figures = {
        "available": True,
        "shadow_models": statistics.count,
        "fpr": fpr,
        "sigma": round(statistics.sigma, 4),
        "source": model_figures(statistics, *source_losses, forget_positions, control,
                                nonmember_test, fpr),
        "result": model_figures(statistics, *result_losses, forget_positions, control,
                                nonmember_test, fpr),
    }
    return figures


def verify_request(ctx: ServiceContext, *, source: ModelVersion, method: UnlearningMethod,
                   target: ForgetTarget, data: ImageData, acceptance: dict[str, Any],
                   before: RequestMetrics, after: RequestMetrics,
                   source_outcomes: ModelOutcomes, result_outcomes: ModelOutcomes,
                   forget_report: dict | None) -> dict[str, Any]:
    """Evaluate the request's criteria; returns the ``verification`` object of the request."""
    criteria = accuracy_criteria(acceptance, before, after)
    notes: list[str] = []
    statistics, missing = lineage_shadows(ctx, source, data)
    fpr = acceptance.get("membership_fpr", ctx.settings.acceptance_samples_membership_fpr)
    if statistics is not None:
        membership = membership_evidence(
            statistics, data, target,
            (source_outcomes.train.loss, source_outcomes.test.loss),
            (result_outcomes.train.loss, result_outcomes.test.loss), fpr, bool(target.classes))
    else:
        membership = {"available": False, "reason": missing}
    if "membership_fpr" in acceptance:
        criteria.append(_membership_criterion(membership, acceptance, notes))
    elif membership["available"]:
        notes.append("per-sample membership figures are reported for information; class "
                     "targets are judged by the forgotten classes' test accuracy")
    if method.exact:
        notes.append(f"{method.name} is exact (retrains without the data); the criteria "
                     f"were still checked")
    failed = [c["name"] for c in criteria if not c["passed"]]
    verification: dict[str, Any] = {
        "passed": not failed,
        "criteria": criteria,
        "failed": failed,
        "exact": bool(method.exact),
        "membership": membership,
        "notes": notes,
    }
    calibration = (forget_report or {}).get("ssd")
    if calibration is not None:
        verification["calibration"] = calibration
    return verification


def _membership_criterion(membership: dict, acceptance: dict, notes: list[str]) -> dict:
    """Forgotten samples detected at the stated FPR, with the threshold set on never-seen
    test images under the same model, against what chance allows (a binomial quantile).

    The empirical threshold, rather than the Gaussian one, decides: a model trained
    differently from its shadows (more data, more epochs) is more confident on *every*
    image, which shifts all z and would flag never-seen images too. The Gaussian test's
    flagged counts are reported beside it, with its own rate on never-seen images."""
    fpr = acceptance["membership_fpr"]
    if not membership["available"]:
        return not_available(FORGET_MEMBERSHIP, None, membership["reason"])
    result = membership["result"]["forget"]
    source = membership["source"]["forget"]
    tested = result["samples_tested"]
    if tested == 0 or result["detected"] is None:
        return not_available(FORGET_MEMBERSHIP, None,
                             "no forgotten sample has enough shadow models that never saw it")
    allowed = allowed_flagged(tested, fpr, acceptance["membership_significance"])
    threshold = round(allowed / tested, 4)
    passed = result["detected"] <= allowed
    source_passes = source["detected"] is not None and source["detected"] <= allowed
    note = None
    if passed and source_passes:
        note = ("no power: the source version's forgotten samples were already "
                "indistinguishable from never-seen data at this false-positive rate "
                f"({source['detected']} of {tested} detected before unlearning, {allowed} "
                "allowed by chance); the pass means nothing was detectable to begin with, "
                "not that the unlearning removed a signal")
        notes.append(note)
    control = membership["result"]["retained_control"]
    if control["tpr_at_fpr"] is not None and control["tpr_at_fpr"] <= 2 * fpr:
        notes.append("the retained control (training samples the new version still holds) "
                     "is hardly detected either: on this model the test cannot tell members "
                     "from non-members")
    return criterion(FORGET_MEMBERSHIP, threshold, result["tpr_at_fpr"], passed,
                     note=note, detected=result["detected"], allowed=allowed, tested=tested,
                     source_value=source["tpr_at_fpr"], has_power=not source_passes)


def train_shadow_bank(ctx: ServiceContext, model_name: str, count: int,
                      version: int | None = None, epochs: int | None = None,
                      bank_seed: int = 0, report=None) -> tuple[ModelVersion, list]:
    """Train (or complete) the shadow bank of ``model_name``'s lineage root: the model's
    own architecture, the root's recipe (``epochs`` may shorten it), each shadow on a
    seeded random half of the training split."""
    from app.registry.service import resolve_version

    data = ctx.model_data(model_name)
    with ctx.db.session() as session:
        root = lineage_root(session, resolve_version(session, model_name, version, "version"))
    if root.kind != "cnn":
        raise ValueError(f"version {root.version} is of kind {root.kind!r}; shadow banks are "
                         f"built for single CNNs")
    recipe_fields = dict((root.model_card or {}).get("training_recipe") or {})
    known = set(TrainingRecipe.__dataclass_fields__)
    recipe = TrainingRecipe(**{k: v for k, v in recipe_fields.items() if k in known})
    if epochs is not None:
        recipe = TrainingRecipe(**{**recipe.to_dict(), "epochs": epochs})
    spec = model_spec(ctx, ctx.dataset_of(model_name), root.architecture)
    directory = shadow_banks(ctx).directory(model_name, root.version, data)
    paths = train_shadows(directory, data, lambda: build_model(spec), recipe,
                          count, bank_seed, report)
    return root, paths


def verification_summary(verification: dict[str, Any]) -> dict[str, Any]:
    """What the audit entry records: the verdict and each criterion, no bulky figures."""
    return {
        "passed": verification["passed"],
        "failed": verification["failed"],
        "criteria": [{key: c.get(key) for key in ("name", "threshold", "value", "passed",
                                                  "available", "note")}
                     for c in verification["criteria"]],
        "exact": verification["exact"],
        "membership_available": verification["membership"]["available"],
        "notes": verification["notes"],
        **({"calibration_chosen": verification["calibration"].get("chosen")}
           if "calibration" in verification else {}),
    }
