"""The ceiling for serving: a FastAPI endpoint that parses the same body as /v1/predict with orjson
and answers without a model. Run under the same uvicorn settings as `perennial serve`."""

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()


@app.post("/v1/predict")
async def predict(request: Request) -> Response:
    doc = orjson.loads(await request.body())
    n = len(doc) if isinstance(doc, list) else 1
    return Response(orjson.dumps({"score": 0.0, "version": "bare", "n": n}), media_type="application/json")
