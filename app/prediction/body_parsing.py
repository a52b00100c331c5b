"""Prediction bodies parsed where they cannot stall other requests.

A 15 MB ``/predict`` body takes orjson about 0.2 s to parse and the pixel check another
0.05 s, and both hold the GIL throughout: on the event loop every other request waits,
and in a worker thread it waits all the same (the loop thread cannot run Python while
the parser holds the GIL). So a body of at least ``UNLEARN_PREDICT_PARSE_OFFLOAD_BYTES``
is parsed in one of ``UNLEARN_PREDICT_PARSE_PROCESSES`` spawned processes, which hand
back the pixels as one float32 array (cheap to pickle) rather than nested lists. Smaller
bodies are parsed on the event loop, where a 256-image batch is fastest.

This module imports neither torch nor FastAPI, so that a parsing process starts light.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import numpy as np
import orjson
from pydantic import ValidationError

from app.core.errors import InvalidInputError, ServiceError
from app.prediction.schemas import PredictRequest

T = TypeVar("T")

# What orjson writes for anything in a nested list of numbers that is not a number:
# true/false/null and strings. Numbers are written with digits, '.', '-', '+', 'e' only.
_NOT_NUMBER_BYTES = (b"t", b"f", b"n", b'"', b"{")


def check_numbers_only(instances: list) -> None:
    """Refuse booleans, strings, nulls and objects among the pixels. NumPy would convert
    true and "0.5" to 1.0 and 0.5 silently; re-serializing with orjson and scanning the
    bytes keeps the check in C (a few ms for a 256-image batch)."""
    text = orjson.dumps(instances)
    if not any(marker in text for marker in _NOT_NUMBER_BYTES):
        return
    for index, instance in enumerate(instances):
        part = orjson.dumps(instance)
        if any(marker in part for marker in _NOT_NUMBER_BYTES):
            raise InvalidInputError(
                f"instances[{index}] holds a value that is not a number (pixels are JSON "
                f"numbers in [0, 1]; true, false, null and strings are refused)",
                f"instances[{index}]")


def parse_predict_body(raw: bytes, as_array: bool = False
                       ) -> tuple[PredictRequest, list | np.ndarray | None]:
    """The request model, and the raw ``instances`` when given (raises pydantic's
    ``ValidationError`` or ``InvalidInputError``).

    ``instances`` dominates the cost: a 256-image batch is 200,704 JSON numbers. orjson
    parses them and NumPy checks shape, finiteness and range in C (``batch_from_instances``),
    which is about twice as fast as validating every number as a pydantic float; all the
    other fields go through ``PredictRequest`` as usual (anything but a list under
    ``instances`` too, so its errors keep the model's wording). ``as_array``: instances
    of a regular shape come back as one float32 array (what a parsing process sends)."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Not strict JSON (or not JSON at all): pydantic-core's parser also reads the
        # NaN/Infinity literals some clients send, so the error can name the image.
        body = PredictRequest.model_validate_json(raw)
        return body, body.instances
    instances = None
    if isinstance(document, dict) and isinstance(document.get("instances"), list):
        instances = document.pop("instances")
        check_numbers_only(instances)
    body = PredictRequest.model_validate(document)
    if as_array and instances is not None:
        try:
            return body, np.asarray(instances, dtype=np.float32)
        except (ValueError, TypeError):  # ragged: the lists name the bad image
            pass
    return body, instances


class ParseFailure(Exception):
    """A pydantic validation error from a parsing process (its ``errors()`` list)."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("invalid body")
        self.errors = errors


def _contained(function: Callable[..., T], *args: Any) -> tuple[str, Any]:
    """Runs in a parsing process: the result, or the error as plain picklable values
    (a ServiceError's own pickling would drop its field)."""
    try:
        return "ok", function(*args)
    except ServiceError as error:
        return "service_error", (type(error), error.message, error.field)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        for item in errors:
            if item.get("ctx"):
                item["ctx"] = {key: str(value) for key, value in item["ctx"].items()}
        return "validation_error", errors


class BodyParser:
    """Runs a parse on the event loop (small bodies) or in a parsing process."""

    def __init__(self, offload_bytes: int, processes: int):
        self.offload_bytes = offload_bytes
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def offloads(self, size: int) -> bool:
        return self.processes > 0 and size >= self.offload_bytes

    async def run(self, size: int, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` for a body of ``size`` bytes, where it belongs. Errors come
        back as raised: a ServiceError as itself, pydantic's as ``ParseFailure``."""
        if not self.offloads(size):
            return function(*args)
        future = self._executor().submit(_contained, function, *args)
        kind, value = await asyncio.wrap_future(future)
        if kind == "ok":
            return value
        if kind == "service_error":
            error_type, message, field = value
            raise error_type(message, field)
        raise ParseFailure(value)

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn, not fork: the API process runs threads (workers, torch) that a
                # forked child would inherit mid-operation.
                self._pool = ProcessPoolExecutor(
                    self.processes, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
