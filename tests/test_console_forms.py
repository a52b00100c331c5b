"""The console's form and figure helpers on datasets other than MNIST: sample IDs are the
dataset's own (strings for image folders and manifests), and a model may have any number
of classes."""

from __future__ import annotations

import pytest
from starlette.datastructures import FormData

from app.console import views
from app.console.pages.requests import _request_body
from app.core.errors import InvalidInputError


def _form(sample_ids: str) -> FormData:
    return FormData([("method", "ssd"), ("sample_ids", sample_ids), ("requested_by", "dpo"),
                     ("reason", "Art. 17 request"), ("subject_reference", "ticket-1")])


def test_sample_ids_are_sent_as_the_dataset_names_them():
    body = _request_body(_form("7, 123 cats/001.png 00123"))
    # canonical decimals as numbers (MNIST), everything else as typed, zeros kept
    assert body.sample_ids == [7, 123, "cats/001.png", "00123"]


def test_a_sample_id_with_control_characters_is_refused_by_field():
    with pytest.raises(InvalidInputError) as refused:
        _request_body(_form("ok bad\x00id"))
    assert refused.value.field == "sample_ids"


def _set(per_class, confusion):
    return {"per_class_accuracy": per_class, "confusion_matrix": confusion}


def test_per_class_and_confusion_follow_the_models_class_count():
    metrics = {  # a three-class model that forgot class 1
        "test_forget": _set([None, 0.1, None], [[0, 0, 0], [2, 1, 7], [0, 0, 0]]),
        "test_retain": _set([0.9, None, 0.8], [[9, 1, 0], [0, 0, 0], [1, 1, 8]]),
    }
    assert views.test_per_class(metrics) == [0.9, 0.1, 0.8]
    assert views.test_confusion(metrics) == [[9, 1, 0], [2, 1, 7], [1, 1, 8]]
    twelve = {"test_retain": _set([0.5] * 12, [[1] * 12 for _ in range(12)])}
    assert len(views.test_per_class(twelve)) == 12
    assert len(views.test_confusion(twelve)) == 12
