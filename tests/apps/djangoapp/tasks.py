"""The Celery app of the Django service (broker from CELERY_BROKER)."""

import os

from celery import Celery

app = Celery("djangoapp", broker=os.environ.get("CELERY_BROKER", "memory://"))


@app.task(name="shop.send_receipt")
def send_receipt(payment_id, email=None, password=None):
    return {"sent": payment_id}
