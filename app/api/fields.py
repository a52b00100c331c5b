"""Lists of summaries: a list route omits detail fields unless ``?include=`` asks for them,
so that a field is either present with its value or absent, never null for "not shown"."""

from __future__ import annotations

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel


def omit_fields(page: BaseModel, fields: set[str]) -> JSONResponse:
    """``page`` (``{"items": [...], ...}``) as JSON with ``fields`` removed from each item."""
    body = jsonable_encoder(page)
    for item in body["items"]:
        for field in fields:
            item.pop(field, None)
    return JSONResponse(body)
