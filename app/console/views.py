"""Shaping rows and metrics for the console's pages: plain functions, no HTTP."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from app.forget_requests.models import ForgetRequest
from app.registry.models import ModelVersion
from app.unlearning.catalog import METHODS

NAMED_SET_LABELS = {
    "forget": "forget (targeted training images)",
    "retain": "retain (other training images)",
    "test_forget": "test_forget (test images of forgotten classes)",
    "test_retain": "test_retain (test images of other classes)",
}
PAPER_SCORES = ("forgetting_efficiency", "retention_score")


@dataclass
class VersionNode:
    row: ModelVersion
    is_production: bool
    children: list["VersionNode"] = field(default_factory=list)

    @property
    def test_accuracy(self) -> float | None:
        return ((self.row.metrics or {}).get("test") or {}).get("accuracy")


def version_tree(rows: list[ModelVersion], production: int | None) -> list[VersionNode]:
    """Roots (versions without a parent, or whose parent is missing) with nested children."""
    nodes = {row.version: VersionNode(row, row.version == production) for row in rows}
    roots: list[VersionNode] = []
    for row in sorted(rows, key=lambda r: r.version):
        parent = nodes.get(row.parent_version) if row.parent_version is not None else None
        (parent.children if parent else roots).append(nodes[row.version])
    return roots


def test_per_class(metrics: dict | None) -> list[float | None]:
    """Per-class test accuracy of a request's before/after metrics: test_forget holds the
    forgotten classes, test_retain the others, so together they cover the test set."""
    metrics = metrics or {}
    forget = (metrics.get("test_forget") or {}).get("per_class_accuracy")
    retain = (metrics.get("test_retain") or {}).get("per_class_accuracy")
    classes = len(forget or retain or [])  # the model's dataset decides, not MNIST's ten
    forget, retain = forget or [None] * classes, retain or [None] * classes
    return [f if f is not None else r for f, r in zip(forget, retain)]


def test_confusion(metrics: dict | None) -> list[list[int]] | None:
    """The test confusion matrix: test_forget's plus test_retain's (disjoint rows)."""
    metrics = metrics or {}
    found = [(metrics.get(name) or {}).get("confusion_matrix")
             for name in ("test_forget", "test_retain")]
    parts = [part for part in found if part]
    if not parts:
        return None
    classes = len(parts[0])
    return [[sum(part[i][j] for part in parts) for j in range(classes)]
            for i in range(classes)]


def extra_figures(metrics: dict | None) -> dict[str, Any]:
    """Figures beyond the named sets and the paper's scores (membership inference and
    whatever later methods record), shown as they are."""
    known = set(NAMED_SET_LABELS) | set(PAPER_SCORES)
    return {key: value for key, value in (metrics or {}).items() if key not in known}


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted key, scalar) rows for a table."""
    if isinstance(value, dict):
        rows = []
        for key, inner in value.items():
            rows.extend(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(value, float):  # membership AUCs and the like: 4 significant digits
        value = float(f"{value:.4g}")
    return [(prefix, value)]


@dataclass
class ParamField:
    name: str
    kind: str  # number, integer, boolean, string
    required: bool
    default: Any
    description: str
    range_text: str
    minimum: float | None
    maximum: float | None


@dataclass
class MethodForm:
    name: str
    description: str
    supports_classes: bool
    supports_samples: bool
    fields: list[ParamField]


def method_forms() -> list[MethodForm]:
    """Each method's parameters with their documented ranges, from its pydantic schema."""
    forms = []
    for method in METHODS.values():
        schema = method.Params.model_json_schema()
        required = set(schema.get("required", []))
        fields = []
        for name, spec in schema.get("properties", {}).items():
            kind = spec.get("type") or next(
                (option.get("type") for option in spec.get("anyOf", [])
                 if option.get("type") not in (None, "null")), "string")
            low = spec.get("exclusiveMinimum", spec.get("minimum"))
            high = spec.get("exclusiveMaximum", spec.get("maximum"))
            range_text = ""
            if low is not None or high is not None:
                left = "(" if "exclusiveMinimum" in spec else "["
                right = ")" if "exclusiveMaximum" in spec else "]"
                range_text = (f"{left}{'-inf' if low is None else low}, "
                              f"{'inf' if high is None else high}{right}")
            fields.append(ParamField(
                name=name, kind=kind, required=name in required, default=spec.get("default"),
                description=spec.get("description", ""), range_text=range_text,
                minimum=spec.get("minimum"), maximum=spec.get("maximum"),
            ))
        forms.append(MethodForm(method.name, method.description, method.supports_classes,
                                method.supports_samples, fields))
    return forms


def request_summary(row: ForgetRequest) -> dict:
    duration = None
    if row.started_at and row.finished_at:
        duration = (row.finished_at - row.started_at).total_seconds()
    return {"row": row, "duration_s": duration}


def parse_local_time(value: str | None, field_name: str) -> dt.datetime | None:
    """A ``datetime-local`` form value (or ISO 8601); without a zone it is read as UTC."""
    from app.core.errors import InvalidInputError

    if value is None or not value.strip():
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInputError(
            f"{field_name}: {value!r} is not a date and time (YYYY-MM-DDTHH:MM)", field_name
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
