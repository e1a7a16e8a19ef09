"""The Open Inference Protocol (KServe V2, as spoken by Triton, MLServer and KServe) beside /v1/predict.

- ``GET /v2`` (server metadata), ``GET /v2/health/live``, ``GET /v2/health/ready`` (a model is loaded).
- ``GET /v2/models/{name}`` (model metadata), ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``,
  and each under ``/v2/models/{name}/versions/{version}``.

The one model is ``serve.model_name``; its one version is the one served now (the server follows the
registry's CURRENT), so ``versions`` lists it alone and another version is refused (400) naming it.

Inputs: the model metadata lists one FP32 tensor per feature, shape ``[-1]``, in the schema's order.
An infer request sends either those tensors, each ``[N]`` or ``[N, 1]``, or one tensor ``[N, n_features]``
with the features as columns in that order, under a name that is not a feature's (``features``,
``input__0``...). Any FP32, FP64, INT* or UINT* datatype is taken; values must be finite. Output:
``score``, FP32 ``[N]``, the calibrated fraud probability; ``model_version`` names the version that
scored. Tensors come as JSON ``data`` or as binary data (the binary tensor extension, tritonclient's
default, inputs and outputs); compressed bodies are refused.

A schema's declarations (``FeatureSchema.features``) change this only where it makes them. A
categorical feature is listed as a ``BYTES`` tensor and sent as one: one string a row (JSON strings,
or binary elements as for ``id`` below), its key; a value outside the vocabulary is scored as other
and counted (``perennial_server_unseen_categories_total{feature}``), and JSON ``null`` is a missing value
where the feature is optional. A model with categorical features takes one tensor per feature, not
the matrix form. An optional number may be NaN in a floating-point tensor (or its column of the
matrix): missing, scored imputed; NaN in a required one, and an infinity anywhere, is refused as
before. An optional feature's tensor may be left out: every row misses it.

Event ids: beside the features, a request may send an input named ``id`` of datatype ``BYTES``, shape
``[N]`` or ``[N, 1]``, one UTF-8 string per row (JSON strings, or the binary extension's 4-byte
little-endian length then the bytes of each): the id of each row's event, as ``id`` is in a
/v1/predict event. With the prediction log on (``serve.prediction_log``), each row is logged with its
id, so that its late label can be joined to what was scored, as for /v1/predict; rows sent without
one are counted as ``no_id`` and not logged. The request's own ``id`` names the request (echoed in the
answer), not its events: a request holds many rows. ``id`` is not listed among the model metadata's
inputs (V2 metadata has no optional inputs; the features alone are required). The event's time in the
log is when the server scored it.

Rows are scored by the same ``Predictor`` as /v1/predict (one micro-batcher, one prediction log), with
its limits: ``serve.max_batch`` rows and ``serve.max_body_bytes`` per request. Concurrent V2 and
/v1/predict requests parsed in the same turn of the event loop share one forward pass (batching.py).
Errors are V2's ``{"error": ...}``: 404 an unknown model, 400 a bad request, 413 over a limit, 503 no
model yet.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from learners.scoring import ScoringModel
from perennial import package_version
from perennial.settings import ServeSettings
from service.errors import INTERNAL_ERROR, ApiError, json_response
from service.front import ClientGone, join_limited
from service.model_store import ModelStore
from service.predictor import Predictor
from streams.events import MISSING, OTHER, category_key, declarations

log = logging.getLogger("perennial.serve")

SERVER_NAME = "perennial"
PLATFORM = "perennial"  # numpy forward pass of the network's safetensors weights (learners/scoring.py)
EXTENSIONS = ["binary_tensor_data"]
OUTPUT = "score"
ID_INPUT, BYTES = "id", "BYTES"  # each row's event id (the prediction log's key), optional; and categories
HEADER_LENGTH = "inference-header-content-length"  # the binary tensor extension's JSON part, in bytes
DATATYPES: dict[str, type[np.generic]] = {
    "FP32": np.float32, "FP64": np.float64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
}


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(Ready):
    name: str


class OutputTensor(TensorMetadata):
    data: list[float] | None = None
    """Absent when the tensor is sent as binary data (``parameters.binary_data_size`` bytes after the JSON)."""
    parameters: dict[str, Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]


class V2Error(BaseModel):
    error: str


@dataclass(frozen=True)
class Infer:
    """An infer request, parsed: the feature rows (float32, schema order), the request's id, whether
    the score goes back as binary data, and each row's event id (None when the request sent none)."""

    rows: np.ndarray
    id: str | None
    binary_output: bool
    ids: list[str] | None = None


@dataclass(frozen=True)
class _Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    values: np.ndarray  # flat, of the declared datatype (BYTES: objects, str or None)


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _object(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"{what} must be an object")
    return value


def parse_infer(body: bytes, header_length: str | None, names: Sequence[str], max_batch: int) -> Infer:
    """The raw vectors of one V2 infer request (JSON, or JSON then binary tensors when ``header_length``
    is given), refused with 400 naming the problem (413 beyond ``max_batch`` rows). ``names`` is the
    schema's ``features`` (or plain names: required numbers only)."""
    optional, categories = declarations(names)
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise _bad(f"Inference-Header-Content-Length is {header_length!r}; it must be the size of the JSON part, "
                       f"at most the body's {len(body)} bytes")
        body, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"body is not valid JSON ({exc.msg}); NaN and Infinity are not allowed") from None
    if not isinstance(doc, dict):
        raise _bad("body must be an inference request object with 'inputs'")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad("'id' must be a string")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("'inputs' must be a non-empty list of tensors")
    tensors, offset, ids = [], 0, None
    for i, spec in enumerate(inputs):
        name = spec.get("name") if isinstance(spec, dict) and isinstance(spec.get("name"), str) else None
        if isinstance(spec, dict) and spec.get("datatype") == BYTES and name in categories:
            values, offset = _strings(spec, binary, offset, name, "values", "a value", nulls=name in optional)
            tensors.append(_Tensor(name, BYTES, tuple(spec["shape"]), np.array(values, dtype=object)))
            continue
        if isinstance(spec, dict) and name == ID_INPUT and spec.get("datatype") == BYTES:
            if ids is not None:
                raise _bad(f"input {ID_INPUT!r} is given twice")
            strings, offset = _strings(spec, binary, offset, ID_INPUT, "event ids", "an id", nulls=False)
            ids = [x for x in strings if x is not None]  # all of them: no nulls were allowed
            continue
        tensor, offset = _tensor(spec, i, binary, offset, lenient=bool(optional) and (name in optional or name not in names),
                                 categories=tuple(categories))
        tensors.append(tensor)
    if offset != len(binary):
        raise _bad(f"{len(binary) - offset} bytes of binary data follow the tensors' declared binary_data_size")
    if not tensors:
        raise _bad(f"the inputs hold no features; send one tensor per feature ({', '.join(names)}) "
                   f"or one tensor [N, {len(names)}]")
    rows = _rows(tensors, names)
    if not len(rows):
        raise _bad("the inputs hold no rows")
    if len(rows) > max_batch:
        raise ApiError(413, f"{len(rows)} rows in one request; the limit is {max_batch}")
    if ids is not None and len(ids) != len(rows):
        raise _bad(f"input {ID_INPUT!r} holds {len(ids)} ids; the features hold {len(rows)} rows (one id a row)")
    default_binary = _object(doc.get("parameters"), "'parameters'").get("binary_data_output") is True
    return Infer(rows, request_id, _binary_output(doc.get("outputs"), default_binary), ids)


def _strings(spec: dict[str, Any], binary: bytes, offset: int, name: str, plural: str, one: str, nulls: bool) -> tuple[list[str | None], int]:
    """The strings of a BYTES input ``[N]`` or ``[N, 1]`` (JSON strings, and nulls where ``nulls``; or
    binary elements, each a 4-byte little-endian length then its bytes), and the offset after it.
    ``plural`` and ``one`` say what they are, in messages."""
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or len(shape) not in (1, 2) \
            or shape[1:] not in ([], [1]):
        raise _bad(f"input {name!r} has shape {shape!r}; the {plural} are [N] or [N, 1], one a row")
    size = shape[0]
    binary_size = _object(spec.get("parameters"), f"input {name!r}'s parameters").get("binary_data_size")
    if binary_size is not None:
        left = len(binary) - offset
        if type(binary_size) is not int or not 0 <= binary_size <= left:
            raise _bad(f"input {name!r}: binary_data_size is {binary_size!r}; {left} bytes of binary data are left")
        raw: list[bytes] = []
        end = offset + binary_size
        while len(raw) < size and end - offset >= 4:
            length = int.from_bytes(binary[offset : offset + 4], "little")
            if length > end - offset - 4:
                break
            raw.append(binary[offset + 4 : offset + 4 + length])
            offset += 4 + length
        if len(raw) != size or offset != end:
            raise _bad(f"input {name!r}: its {binary_size} bytes of binary data do not hold {size} BYTES elements "
                       "(each a 4-byte little-endian length, then that many bytes)")
        try:
            return [r.decode() for r in raw], offset
        except UnicodeDecodeError:
            raise _bad(f"input {name!r} holds {one} that is not UTF-8") from None
    if "data" not in spec:
        raise _bad(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    data = spec["data"]
    if not isinstance(data, list):
        raise _bad(f"input {name!r}: 'data' must be a list of strings")
    flat = [y for x in data for y in (x if type(x) is list else (x,))]
    if len(flat) != size or not all(type(x) is str or (x is None and nulls) for x in flat):
        raise _bad(f"input {name!r} must hold {size} strings{' (or nulls: missing)' if nulls else ''} (its shape {shape}), one a row")
    return flat, offset


def _tensor(spec: object, i: int, binary: bytes, offset: int, lenient: bool = False, categories: tuple[str, ...] = ()) -> tuple[_Tensor, int]:
    """Input ``i`` with its numbers (JSON ``data``, or its bytes of ``binary`` from ``offset`` on) and
    the offset after it; ``lenient``: NaN passes (a missing optional number, checked by ``_rows``)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise _bad(f"input {i} must be an object with a 'name'")
    name, datatype, shape = spec["name"], spec.get("datatype"), spec.get("shape")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        also = f" or a categorical feature's ({', '.join(categories)})" if categories else ""
        raise _bad(f"input {name!r} has datatype {datatype!r}; the model takes {', '.join(DATATYPES)} "
                   f"(and {BYTES} only as the input {ID_INPUT!r}: each row's event id{also})")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _bad(f"input {name!r} has shape {shape!r}; a shape is a list of sizes (integers, at least 0)")
    dtype, size = np.dtype(DATATYPES[datatype]), math.prod(shape)
    binary_size = _object(spec.get("parameters"), f"input {name!r}'s parameters").get("binary_data_size")
    if binary_size is not None:
        need, left = size * dtype.itemsize, len(binary) - offset
        if type(binary_size) is not int or binary_size != need or binary_size > left:
            raise _bad(f"input {name!r}: binary_data_size is {binary_size!r}; its shape {shape} of {datatype} takes "
                       f"{need} bytes, and {left} bytes of binary data are left")
        values = np.frombuffer(binary, dtype.newbyteorder("<"), size, offset)
        offset += binary_size
    elif "data" in spec:
        values = _json_values(spec["data"], name, datatype, size)
    else:
        raise _bad(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    if dtype.kind == "f":
        finite = np.isfinite(values)
        if not (finite | np.isnan(values) if lenient else finite).all():
            raise _bad(f"input {name!r} holds a value that is not a finite {datatype}")
    return _Tensor(name, datatype, tuple(shape), values), offset


def _json_values(data: object, name: str, datatype: str, size: int) -> np.ndarray:
    """The flat values of a JSON tensor (nested lists or row-major flat), checked against its datatype."""
    if not isinstance(data, list):
        raise _bad(f"input {name!r}: 'data' must be a list of numbers")
    flat = data
    while any(type(x) is list for x in flat):
        flat = [y for x in flat for y in (x if type(x) is list else (x,))]
    if len(flat) != size:
        raise _bad(f"input {name!r} holds {len(flat)} values; its shape holds {size}")
    allowed = {int, float} if datatype.startswith("FP") else {int}
    if not set(map(type, flat)) <= allowed:
        kinds = "numbers" if float in allowed else "integers"
        raise _bad(f"input {name!r} is {datatype}: its values must be {kinds}")
    try:
        with np.errstate(over="ignore"):  # beyond FP32: inf, refused as not finite
            return np.asarray(flat, DATATYPES[datatype])
    except OverflowError:
        raise _bad(f"input {name!r} holds a value beyond the range of {datatype}") from None


def _rows(tensors: list[_Tensor], names: Sequence[str]) -> np.ndarray:
    """The tensors as one float32 matrix of raw vectors in schema order: one matrix tensor, or one
    tensor per feature (categories by key to their codes, an optional feature left out missing)."""
    optional, categories = declarations(names)
    expected = (f"send one tensor per feature ({', '.join(names)}), each [N] or [N, 1], "
                f"or one tensor [N, {len(names)}] with them as columns")
    if categories:
        expected = (f"send one tensor per feature ({', '.join(names)}), each [N] or [N, 1], {BYTES} for a categorical one "
                    f"({', '.join(categories)})")
    first = tensors[0]
    if len(tensors) == 1 and first.name not in names and len(first.shape) == 2:
        if categories:
            raise _bad(f"input {first.name!r} is a matrix; the model has categorical features: {expected}")
        if first.shape[1] != len(names):
            raise _bad(f"input {first.name!r} has shape {list(first.shape)}; "
                       f"the model takes [N, {len(names)}]: {', '.join(names)}")
        matrix = _float32(first.values).reshape(first.shape)
        if optional and first.datatype.startswith("FP"):
            required = [j for j, n in enumerate(names) if n not in optional]
            if np.isnan(matrix[:, required]).any():
                raise _bad(f"input {first.name!r} holds a value that is not a finite {first.datatype} "
                           "in the column of a required feature (NaN is a missing value only where a feature is optional)")
        return matrix
    by_name: dict[str, _Tensor] = {}
    for t in tensors:
        if t.name not in names:
            hint = f" (each row's event id goes in a {BYTES} tensor named {ID_INPUT!r})" if t.name == ID_INPUT else ""
            raise _bad(f"input {t.name!r} is not a feature of the model{hint}; {expected}")
        if t.name in by_name:
            raise _bad(f"input {t.name!r} is given twice")
        if len(t.shape) not in (1, 2) or t.shape[1:] not in ((), (1,)):
            raise _bad(f"input {t.name!r} has shape {list(t.shape)}; a feature's tensor is [N] or [N, 1]")
        if t.name in categories and t.datatype != BYTES:
            raise _bad(f"input {t.name!r} is a categorical feature: send it as a {BYTES} tensor of strings, not {t.datatype}")
        by_name[t.name] = t
    missing = [n for n in names if n not in by_name and n not in optional]
    if missing:
        raise _bad(f"feature {', '.join(map(repr, missing[:5]))} is missing; {expected}")
    lengths = {t.name: t.shape[0] for t in tensors}
    if len(set(lengths.values())) > 1:
        raise _bad(f"the feature tensors have different numbers of rows: {lengths}")
    n = tensors[0].shape[0]
    return np.stack([_column(by_name.get(name), n, categories.get(name)) for name in names], axis=1)


def _column(tensor: _Tensor | None, n: int, vocabulary: dict[str, int] | None) -> np.ndarray:
    """One feature's raw values: its numbers, or its categories' codes; missing in every row without a tensor."""
    if tensor is None:
        return np.full(n, np.nan if vocabulary is None else float(MISSING), np.float32)
    if vocabulary is None:
        return _float32(tensor.values)
    return np.array([MISSING if key is None else vocabulary.get(category_key(key), OTHER) for key in tensor.values], np.float32)


def _float32(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # an FP64 beyond float32 becomes inf, clipped by the schema as in /v1/predict
        return values.astype(np.float32)


def _binary_output(outputs: object, default: bool) -> bool:
    """Whether ``score`` goes back as binary data; any other output requested is refused."""
    if outputs is None:
        return default
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise _bad("'outputs' must be a list of objects with a 'name'")
    binary = default
    for o in outputs:
        if o.get("name") != OUTPUT:
            raise _bad(f"unknown output {o.get('name')!r}; the model gives {OUTPUT!r}")
        binary = _object(o.get("parameters"), f"output {OUTPUT!r}'s parameters").get("binary_data", default) is True
    return binary


def infer_response(model_name: str, version: str, request: Infer, scores: np.ndarray) -> Response:
    """The V2 answer: JSON, or JSON then the scores' bytes (binary tensor extension)."""
    scores = scores.astype(np.float32)
    output: dict[str, Any] = {"name": OUTPUT, "datatype": "FP32", "shape": [len(scores)]}
    raw = b""
    if request.binary_output:
        raw = scores.astype("<f4").tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = scores
    doc = {"model_name": model_name, "model_version": version, **({"id": request.id} if request.id is not None else {}),
           "outputs": [output]}
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not raw:
        return Response(head, media_type="application/json")
    return Response(head + raw, media_type="application/octet-stream", headers={HEADER_LENGTH: str(len(head))})


def _infer_operation(max_batch: int, max_body_bytes: int) -> dict[str, Any]:
    """The infer route's request body in /openapi.json (the handler parses the body itself)."""
    tensor = {
        "type": "object", "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string", "description": "a feature's name, or any other for one [N, n_features] tensor; "
                     f"'{ID_INPUT}' ({BYTES} [N]): each row's event id, for the prediction log (optional); "
                     f"a categorical feature's tensor is {BYTES}, one string a row"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2},
            "datatype": {"type": "string", "enum": [*DATATYPES, BYTES]},
            "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
            "data": {"type": "array", "description": "values, flat in row-major order or nested by the shape"},
        },
    }
    output = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "enum": [OUTPUT]},
        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
    }}
    request = {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "items": tensor, "minItems": 1},
        "outputs": {"type": "array", "items": output},
    }}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "description": f"At most {max_batch} rows and {max_body_bytes} bytes per request.",
    }


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": V2Error, "description": "A bad request: shape, datatype, feature, value or version"},
    404: {"model": V2Error, "description": "No model of this name"},
    503: {"model": V2Error, "description": "No model is loaded yet"},
}


def v2_router(serve: ServeSettings, store: ModelStore, predictor: Predictor) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (V2)"])
    name = serve.model_name

    def known(model_name: str) -> None:
        if model_name != name:
            raise ApiError(404, f"unknown model {model_name!r}; this server serves {name!r}")

    def serving(model: ScoringModel, version: str | None) -> None:
        if version is not None and version != model.version:
            raise _bad(f"version {version!r} of {name!r} is not served; the served version is {model.version} "
                       "(the server follows the registry's CURRENT)")

    def served(model_name: str, version: str | None) -> ScoringModel:
        """The served model, read once, if it is the one named (404 another name, 400 another version)."""
        known(model_name)
        model = store.model
        if model is None:
            raise ApiError(503, store.why_not_ready())
        serving(model, version)
        return model

    def metadata(model_name: str, version: str | None) -> Response:
        model = served(model_name, version)
        doc = ModelMetadata(
            name=name, versions=[model.version], platform=PLATFORM,
            inputs=[TensorMetadata(name=n, datatype="FP32" if vocabulary is None else BYTES, shape=[-1])
                    for n, vocabulary in zip(model.schema.names, model.schema.categories)],
            outputs=[TensorMetadata(name=OUTPUT, datatype="FP32", shape=[-1])],
        )
        return json_response(doc.model_dump())

    def readiness(model_name: str, version: str | None) -> Response:
        served(model_name, version)
        return json_response(ModelReady(name=name, ready=True).model_dump())

    async def infer(request: Request, model_name: str, version: str | None) -> Response:
        try:
            if request.headers.get("content-encoding", "identity") != "identity":
                raise _bad("compressed request bodies are not supported; send the body uncompressed")
            known(model_name)
            with predictor.request() as model:
                serving(model, version)
                body = await join_limited(request.stream(), request.headers.get("content-length"), serve.max_body_bytes)
                parsed = parse_infer(body, request.headers.get(HEADER_LENGTH), model.schema.features, serve.max_batch)
                n = len(parsed.rows)
                scores = await predictor.score(model, parsed.rows, parsed.ids or [None] * n, [None] * n)
        except ApiError as exc:
            return json_response({"error": exc.message}, exc.status, exc.headers)
        except ClientGone:
            raise
        except Exception:  # as /v1/predict answers it: JSON, with the cause in the log
            log.exception("V2 infer failed")
            return json_response(INTERNAL_ERROR, 500)
        return infer_response(name, model.version, parsed, scores)

    @router.get("", response_model=ServerMetadata)
    async def server_metadata() -> Response:
        doc = ServerMetadata(name=SERVER_NAME, version=package_version(), extensions=EXTENSIONS)
        return json_response(doc.model_dump())

    @router.get("/health/live", response_model=Live)
    async def live() -> Response:
        return json_response(Live(live=True).model_dump())

    @router.get("/health/ready", response_model=Ready, responses={503: _ERRORS[503]})
    async def ready() -> Response:
        if store.model is None:
            return json_response({"error": store.why_not_ready()}, 503)
        return json_response(Ready(ready=True).model_dump())

    @router.get("/models/{model_name}", response_model=ModelMetadata, responses=_ERRORS)
    async def model_metadata(model_name: str) -> Response:
        return metadata(model_name, None)

    @router.get("/models/{model_name}/versions/{version}", response_model=ModelMetadata, responses=_ERRORS)
    async def version_metadata(model_name: str, version: str) -> Response:
        return metadata(model_name, version)

    @router.get("/models/{model_name}/ready", response_model=ModelReady, responses=_ERRORS)
    async def model_ready(model_name: str) -> Response:
        return readiness(model_name, None)

    @router.get("/models/{model_name}/versions/{version}/ready", response_model=ModelReady, responses=_ERRORS)
    async def version_ready(model_name: str, version: str) -> Response:
        return readiness(model_name, version)

    extra = _infer_operation(serve.max_batch, serve.max_body_bytes)
    too_large = f"Over {serve.max_batch} rows or {serve.max_body_bytes} bytes"
    responses: dict[int | str, dict[str, Any]] = {**_ERRORS, 413: {"model": V2Error, "description": too_large}}

    @router.post("/models/{model_name}/infer", response_model=InferenceResponse, responses=responses,
                 openapi_extra=extra)
    async def model_infer(request: Request, model_name: str) -> Response:
        return await infer(request, model_name, None)

    @router.post("/models/{model_name}/versions/{version}/infer", response_model=InferenceResponse, responses=responses,
                 openapi_extra=extra)
    async def version_infer(request: Request, model_name: str, version: str) -> Response:
        return await infer(request, model_name, version)

    return router
