"""A Flask service whose integrations use urllib3, psycopg2, asyncpg and sqlite3 directly; run by the tests under
``opentelemetry-instrument`` (zero code) with gunicorn."""

import asyncio
import json
import os
import sqlite3

import asyncpg
import psycopg2
import urllib3
from flask import Flask, jsonify, request

app = Flask(__name__)
pool = urllib3.PoolManager()


def _postgres():
    return psycopg2.connect(f"host=127.0.0.1 port={os.environ['PG_PORT']} user=postgres dbname=postgres")


async def _email(account, password):
    conn = await asyncpg.connect(host="127.0.0.1", port=int(os.environ["PG_PORT"]), user="postgres")
    try:
        return await conn.fetchval("SELECT email FROM accounts WHERE id = $1 AND password = $2", account, password)
    finally:
        await conn.close()


@app.post("/v1/accounts")
def create():
    body = request.get_json()
    conn = _postgres()
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO accounts (id, email, password, card, balance) VALUES (%s, %s, %s, %s, %s)",
            (body["id"], body["email"], body["password"], body["card"], 100),
        )
        cur.execute("SELECT balance FROM accounts WHERE id = %s", (body["id"],))
        (balance,) = cur.fetchone()
    conn.commit()
    conn.close()
    email = asyncio.run(_email(body["id"], body["password"]))
    local = sqlite3.connect(os.environ["SQLITE_PATH"])
    local.execute("INSERT INTO audit (account, token) VALUES (?, ?)", (body["id"], body["api_token"]))
    local.commit()
    local.close()
    reply = pool.request(
        "POST",
        f"{os.environ['UPSTREAM_URL']}/v2/verify",
        body=json.dumps({"account": body["id"], "password": body["password"]}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {body['api_token']}"},
    )
    return jsonify(id=body["id"], balance=balance, email=email, verified=json.loads(reply.data)["verified"]), 201
