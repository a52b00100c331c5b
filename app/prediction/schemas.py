from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

# A pixel is a JSON number: strict, so that true and "0.5" are refused, not converted.
Pixel = Annotated[float, Strict()]


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"model_version": 1, "instances": [[[0.0] * 28] * 28]}]},
    )

    model_version: int | None = Field(
        default=None, ge=1, le=2_147_483_647, description="Version to answer; default: the production version."
    )
    instances: list[list[list[Pixel]]] | None = Field(
        default=None, description="Images as 28x28 arrays of floats in [0, 1]."
    )
    images: list[str] | None = Field(
        default=None, description="Images as base64-encoded 28x28 grayscale PNGs."
    )


class Prediction(BaseModel):
    label: int
    probabilities: list[float]


class PredictResponse(BaseModel):
    model_version: int
    predictions: list[Prediction]
