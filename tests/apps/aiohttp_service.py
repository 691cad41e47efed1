"""An aiohttp.web service run under ``opentelemetry-instrument`` by the tests (port from PORT): it calls an
upstream with an aiohttp client session (UPSTREAM_URL) and PostgreSQL through asyncpg (PG_PORT)."""

import os

import asyncpg
from aiohttp import ClientSession, web

import gotrails_otel as gt


async def create_order(request: web.Request) -> web.Response:
    payload = await request.json()
    with gt.step("ValidateOrder"):
        amount = int(payload["amount"])
    result = {"order_id": request.match_info["oid"], "amount": amount}
    conn = await asyncpg.connect(host="127.0.0.1", port=int(os.environ["PG_PORT"]), user="postgres")
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, amount INT, card TEXT)")
        await conn.execute(
            "INSERT INTO orders (id, amount, card) VALUES ($1, $2, $3)", result["order_id"], amount, payload["card"]
        )
    finally:
        await conn.close()
    async with (
        ClientSession() as session,
        session.post(
            f"{os.environ['UPSTREAM_URL']}/v2/charge",
            json={"order_id": result["order_id"], "card_number": payload["card"]},
            headers={"Authorization": "Bearer upstream-s3cret"},
        ) as response,
    ):
        result["charge"] = await response.json()
    return web.json_response(result, status=201)


def main() -> None:
    app = web.Application()  # created after auto-instrumentation replaced web.Application
    app.router.add_post("/api/orders/{oid}", create_order)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)


if __name__ == "__main__":
    main()
