"""A FastAPI service run under ``opentelemetry-instrument`` by the tests (no gotrails code but a step)."""

import os

import httpx
from fastapi import FastAPI

import gotrails_otel as gt

app = FastAPI()
DOWNSTREAM = os.environ.get("DOWNSTREAM_URL")


@app.post("/v1/payments")
def create(payload: dict) -> dict:
    with gt.step("ValidateRequest"):
        amount = int(payload["amount"])
    result = {"payment_id": "pay-123", "amount": amount}
    if DOWNSTREAM:
        with httpx.Client() as client:
            result["downstream"] = client.get(f"{DOWNSTREAM}/v1/users/u-1").json()
    return result


@app.get("/v1/users/{uid}")
def user(uid: str) -> dict:
    return {"user_id": uid, "email": "user@email.com"}
