"""A Flask service for the gunicorn tests, run under ``opentelemetry-instrument``: ``POST /work/{n}`` records ``n``
and the worker's pid as metadata."""

import os

from flask import Flask, jsonify, request

import gotrails_otel as gt

app = Flask(__name__)


@app.post("/work/<int:n>")
def work(n: int):  # type: ignore[no-untyped-def]
    gt.set_metadata(n=n, pid=os.getpid())
    with gt.step("Work"):
        payload = request.get_json()
    return jsonify(n=n, item=payload["item"])
