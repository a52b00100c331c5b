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

    model_name: str | None = Field(
        default=None, min_length=1, max_length=100,
        description="The model to ask; default: the service's default model.")
    model_version: int | None = Field(
        default=None, ge=1, le=2_147_483_647, description="Version to answer; default: the production version."
    )
    instances: list[list[list[Pixel]]] | list[list[list[list[Pixel]]]] | None = Field(
        default=None,
        description="Images shaped as the model's dataset, floats in [0, 1]: H x W arrays "
        "for one-channel images (28x28 for MNIST), C x H x W for colour.",
    )
    images: list[str] | None = Field(
        default=None, description="Images as base64-encoded PNGs of the model's image size "
        "(converted to grayscale or RGB as the model's dataset is).",
    )


class Prediction(BaseModel):
    label: int
    probabilities: list[float]


class PredictResponse(BaseModel):
    model_name: str
    model_version: int
    class_names: list[str] | None = Field(
        default=None, description="Class names of the model's dataset, by label index.")
    predictions: list[Prediction]
