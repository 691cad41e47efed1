"""A Flask service run under ``opentelemetry-instrument`` by the tests."""

from flask import Flask, jsonify, request

import gotrails_otel as gt

app = Flask(__name__)


@app.post("/v1/payments")
def create():
    with gt.step("ValidateRequest"):
        amount = int(request.get_json()["amount"])
    return jsonify(payment_id="pay-123", amount=amount), 201
