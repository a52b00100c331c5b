"""The Open Inference Protocol (KServe v2) request and response bodies, with Triton's
binary data extension.

A request is a JSON header, optionally followed by raw tensor bytes: the header's length is
the ``Inference-Header-Content-Length`` HTTP header, and an input whose
``parameters.binary_data_size`` is set takes that many bytes, in input order, from after
the header (little-endian, row-major). Without the header the whole body is JSON and every
input carries ``data`` (flat or nested, row-major). Responses mirror it: an output is
binary when the request asks (``outputs[i].parameters.binary_data`` or the request-level
``parameters.binary_data_output``), JSON otherwise.

The hosted classifier has one input, ``image``, FP32 pixels in [0, 1] or UINT8 grey
levels 0-255 (scaled to [0, 1] on the device), shaped [N, C, H, W] (or [N, H, W] for one
channel, or [N, C*H*W]); and two outputs, ``probabilities`` (FP32 [N, classes]) and
``label`` (INT64 [N]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.core.errors import InvalidInputError, PayloadTooLargeError

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT_NAME = "image"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_LABEL = "label"
OUTPUT_NAMES = (OUTPUT_PROBABILITIES, OUTPUT_LABEL)
INPUT_DATATYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] | None = None


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class RequestInput(BaseModel):
    """One input tensor's header (``data``, when given in JSON, is read separately)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int] = Field(min_length=1, max_length=8)
    datatype: str
    parameters: dict[str, Any] | None = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


@dataclass(frozen=True)
class ParsedInference:
    request: InferenceRequest
    images: np.ndarray  # [N, C, H, W], float32 in [0, 1] or uint8
    outputs: list[tuple[str, bool]]  # (output name, send as binary), in answer order


def parse_request(body: bytes, header_length: str | None, image_shape: tuple[int, int, int],
                  limit: int) -> ParsedInference:
    """Check an inference request and build its image batch; errors name the field."""
    header, binary = _split(body, header_length)
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError:
        raise InvalidInputError("the inference header is not valid JSON", "body") from None
    if not isinstance(document, dict):
        raise InvalidInputError("the inference header must be a JSON object", "body")
    # Tensor ``data`` can be 200,000 numbers: NumPy reads it (in C), pydantic the rest.
    json_data = []
    inputs = document.get("inputs")
    for item in inputs if isinstance(inputs, list) else []:
        json_data.append(item.pop("data", None) if isinstance(item, dict) else None)
    try:
        request = InferenceRequest.model_validate(document)
    except ValidationError as error:
        item = error.errors()[0]
        field = _field(item["loc"])
        raise InvalidInputError(f"{field}: {item['msg']}", field) from None
    if len(request.inputs) != 1:
        raise InvalidInputError(f"the model takes one input, {INPUT_NAME!r}; "
                                f"got {len(request.inputs)}", "inputs")
    images = _image_batch(request.inputs[0], json_data[0], binary, image_shape, limit)
    return ParsedInference(request, images, _requested_outputs(request))


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 < length <= len(body):
        raise InvalidInputError(
            f"{HEADER_LENGTH} must be a whole number between 1 and the body's length "
            f"({len(body)}); got {header_length!r}", HEADER_LENGTH)
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def _image_batch(tensor: RequestInput, data: Any, binary: memoryview,
                 image_shape: tuple[int, int, int], limit: int) -> np.ndarray:
    field = "inputs[0]"
    if tensor.name != INPUT_NAME:
        raise InvalidInputError(f"unknown input {tensor.name!r}; the model's input is "
                                f"{INPUT_NAME!r}", f"{field}.name")
    dtype = INPUT_DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidInputError(f"datatype {tensor.datatype!r} is not accepted; use "
                                f"{' or '.join(INPUT_DATATYPES)}", f"{field}.datatype")
    count = _image_count(tensor.shape, image_shape, f"{field}.shape")
    if count > limit:
        raise PayloadTooLargeError(f"{count} images exceed the batch limit of {limit}",
                                   f"{field}.shape")
    expected_values = count * math.prod(image_shape)
    binary_size = (tensor.parameters or {}).get("binary_data_size")
    if binary_size is not None:
        if data is not None:
            raise InvalidInputError("give the tensor as binary data or as 'data', not both",
                                    f"{field}.data")
        if not isinstance(binary_size, int) or binary_size != expected_values * dtype.itemsize:
            raise InvalidInputError(
                f"binary_data_size is {binary_size!r}; shape {tensor.shape} of "
                f"{tensor.datatype} is {expected_values * dtype.itemsize} bytes",
                f"{field}.parameters.binary_data_size")
        if len(binary) != binary_size:
            raise InvalidInputError(
                f"the body has {len(binary)} bytes after the inference header; the input "
                f"declares {binary_size}", HEADER_LENGTH)
        # A copy: the request body is read-only, and torch wants writable arrays.
        flat = np.frombuffer(binary, dtype=dtype).astype(dtype.newbyteorder("="), copy=True)
    else:
        if len(binary):
            raise InvalidInputError("binary data follows the header but no input declares "
                                    "parameters.binary_data_size", f"{field}.parameters")
        if data is None:
            raise InvalidInputError("the input has neither 'data' nor binary data",
                                    f"{field}.data")
        flat = _json_values(data, dtype, expected_values, f"{field}.data")
    _check_values(flat, count, image_shape, field)
    return flat.reshape((count, *image_shape))


def _image_count(shape: list[int], image_shape: tuple[int, int, int], field: str) -> int:
    """N for the accepted layouts: [N, C, H, W], [N, H, W] (one channel), [N, C*H*W]."""
    channels, height, width = image_shape
    layouts = [list(image_shape), [channels * height * width]]
    if channels == 1:
        layouts.append([height, width])
    if shape[0] < 1 or shape[1:] not in layouts:
        accepted = " or ".join(str(["N", *layout]) for layout in layouts).replace("'", "")
        raise InvalidInputError(f"shape {shape} is not {accepted} with N >= 1", field)
    return shape[0]


def _json_values(data: Any, dtype: np.dtype, expected: int, field: str) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidInputError("'data' must be a list of numbers", field)
    try:
        with np.errstate(over="ignore"):  # 1e300 as FP32 is inf, refused just below
            values: np.ndarray[Any, np.dtype[Any]] = np.asarray(
                data, dtype=np.float64 if dtype.kind == "u" else np.float32)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInputError("'data' must be a (flat or nested) list of numbers",
                                field) from None
    if values.size != expected:
        raise InvalidInputError(f"'data' has {values.size} values; the shape needs {expected}",
                                field)
    values = values.reshape(-1)
    if dtype.kind == "u":
        if not ((values >= 0) & (values <= 255) & (values == np.round(values))).all():
            raise InvalidInputError("UINT8 values must be whole numbers 0-255", field)
        return values.astype(np.uint8)
    return values


def _check_values(flat: np.ndarray, count: int, image_shape: tuple[int, int, int],
                  field: str) -> None:
    if flat.dtype == np.uint8:
        return  # every byte is a grey level
    images = flat.reshape(count, -1)
    finite = np.isfinite(images).all(axis=1)
    if not finite.all():
        index = int(np.flatnonzero(~finite)[0])
        raise InvalidInputError(f"image {index} contains NaN or infinite values",
                                f"{field}.data")
    in_range = ((images >= 0.0) & (images <= 1.0)).all(axis=1)
    if not in_range.all():
        index = int(np.flatnonzero(~in_range)[0])
        raise InvalidInputError(f"image {index} has FP32 pixel values outside [0, 1]",
                                f"{field}.data")


def _requested_outputs(request: InferenceRequest) -> list[tuple[str, bool]]:
    all_binary = bool((request.parameters or {}).get("binary_data_output", False))
    if not request.outputs:
        return [(name, all_binary) for name in OUTPUT_NAMES]
    outputs = []
    for index, output in enumerate(request.outputs):
        if output.name not in OUTPUT_NAMES:
            raise InvalidInputError(f"unknown output {output.name!r}; the model's outputs "
                                    f"are {', '.join(OUTPUT_NAMES)}", f"outputs[{index}].name")
        parameters = output.parameters or {}
        if parameters.get("classification"):
            raise InvalidInputError("the classification extension is not supported; ask "
                                    "for 'label' and 'probabilities'",
                                    f"outputs[{index}].parameters.classification")
        outputs.append((output.name, bool(parameters.get("binary_data", all_binary))))
    return outputs


def encode_response(model_name: str, version: int, parsed: ParsedInference,
                    probabilities: np.ndarray) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it."""
    tensors = {
        OUTPUT_PROBABILITIES: ("FP32", probabilities.astype("<f4", copy=False)),
        OUTPUT_LABEL: ("INT64", probabilities.argmax(axis=1).astype("<i8")),
    }
    outputs, blobs = [], []
    for name, binary in parsed.outputs:
        datatype, values = tensors[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(values.shape)}
        if binary:
            blob = np.ascontiguousarray(values).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = values.reshape(-1)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": str(version),
                                "outputs": outputs}
    if parsed.request.id is not None:
        document["id"] = parsed.request.id
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _field(location: tuple) -> str:
    name = ""
    for part in location:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"
