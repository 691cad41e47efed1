"""A Celery app whose worker the tests run (broker from CELERY_BROKER, queue from CELERY_QUEUE). With
GOTRAILS_MANUAL=1 it sets OpenTelemetry and gotrails up itself instead of running under opentelemetry-instrument."""

import os

from celery import Celery

import gotrails_otel as gt

if os.environ.get("GOTRAILS_MANUAL"):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    gt.instrument()

app = Celery("shop", broker=os.environ.get("CELERY_BROKER", "memory://"))
app.conf.task_default_queue = os.environ.get("CELERY_QUEUE", "celery")
app.conf.worker_hijack_root_logger = False


@app.task(name="shop.charge")
def charge(order_id, card_number, password=None, note=""):
    with gt.step("Charge"):
        gt.set_metadata(order_id=order_id)
    return {"charged": order_id, "card_number": card_number}


@app.task(name="shop.fail")
def fail(order_id):
    raise ValueError(f"declined for {order_id}, token=s3cr3t-token")


@app.task(name="shop.flaky", bind=True, max_retries=3)
def flaky(self, order_id):
    if self.request.retries < 1:
        raise self.retry(countdown=0, exc=RuntimeError("gateway busy"))
    return {"charged": order_id, "attempt": self.request.retries + 1}
