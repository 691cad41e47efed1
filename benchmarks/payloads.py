"""The payloads of the benchmarked payment service, shared by the load client, the upstream stub and bench_core.

A request body of about 1 KiB (customer, card, address, four items, client metadata, a free-text note), different
text in every request so that no cache hits by accident; the service's response of about 1 KiB; the gateway's answer.
"""

from __future__ import annotations

from typing import Any

import orjson

_BODY = (
    '{"order_id":"ord-%(n)08d","amount":%(amount)d,"currency":"IDR","payment_method":"card",'
    '"customer":{"id":"cus-%(customer)04d","name":"Customer %(customer)d","email":"c%(customer)d@example.com",'
    '"phone":"+62 812 5550 %(customer)04d"},'
    '"card":{"number":"4111111111111111","expiry":"12/29","cvv":"123","holder":"CUSTOMER %(customer)d"},'
    '"billing_address":{"line1":"Jl. Sudirman Kav. %(customer)d","city":"Jakarta","postal_code":"10220",'
    '"country":"ID"},'
    '"items":[{"sku":"SKU-1001","name":"Wireless mouse","quantity":1,"price":125000},'
    '{"sku":"SKU-2002","name":"USB-C cable, 2 m","quantity":2,"price":45000},'
    '{"sku":"SKU-3003","name":"Laptop stand","quantity":1,"price":310000},'
    '{"sku":"SKU-4004","name":"Screen cleaning kit","quantity":3,"price":20000}],'
    '"metadata":{"channel":"web","campaign":"spring-sale","client_ip":"203.0.113.%(ip)d",'
    '"user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"},'
    '"note":"Please deliver between 9 and 17, leave the parcel with the security desk, reference %(n)d"}'
)

GATEWAY_ANSWER = (
    b'{"status_code":"200","status_message":"Success, charge accepted","transaction_id":'
    b'"7b6d7e3c-0f5e-4b7b-9b0e-2a6f4c1d9e11","transaction_status":"capture","fraud_status":"accept",'
    b'"payment_type":"credit_card","currency":"IDR","transaction_time":"2024-05-01 10:00:00"}'
)
"""What the upstream stub answers to every charge."""


def payment_request(n: int) -> bytes:
    """The JSON body of request number ``n`` (about 1 KiB)."""
    return (_BODY % {"n": n, "amount": 150_000 + n % 1000, "customer": n % 100, "ip": n % 250 + 1}).encode()


def payment_response(n: int, payment_id: str) -> bytes:
    """What the service answers to request ``n`` (about 1 KiB), as ``service_app`` builds it."""
    request = orjson.loads(payment_request(n))
    customer = n % 100
    body: dict[str, Any] = {
        "payment_id": payment_id,
        "order_id": request["order_id"],
        "status": "PENDING",
        "amount": request["amount"],
        "currency": "IDR",
        "customer": {
            "id": f"cus-{customer:04d}",
            "name": f"Customer {customer}",
            "email": f"c{customer}@example.com",
            "tier": "gold",
        },
        "gateway": orjson.loads(GATEWAY_ANSWER),
        "items": request["items"],
        "links": {
            "self": f"/v1/payments/{payment_id}",
            "refund": f"/v1/payments/{payment_id}/refund",
            "receipt": f"/v1/payments/{payment_id}/receipt",
        },
    }
    return orjson.dumps(body)
