"""Views of the Django service: JSON in and out, the ORM, an outgoing call with requests, a Celery task, an
upload, a streamed and a file response, a failure."""

import io
import json
import os

import requests
from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.request import RawPostDataException
from django.views.decorators.csrf import csrf_exempt

import gotrails_otel as gt

from .models import Payment

UPSTREAM = os.environ.get("UPSTREAM_URL")
CELERY_BROKER = os.environ.get("CELERY_BROKER")


@csrf_exempt
def create_payment(request):
    payload = json.loads(request.body)
    with gt.step("ValidateRequest"):
        amount = int(payload["amount"])
    payment = Payment.objects.create(id=payload["id"], amount=amount, card_number=payload.get("card_number", ""))
    assert Payment.objects.filter(amount__gte=amount).count() >= 1
    result = {"payment_id": payment.id, "amount": amount, "status": payment.status}
    if UPSTREAM:
        charge = requests.post(
            f"{UPSTREAM}/v2/charge",
            json={"order_id": payment.id, "gross_amount": amount, "card_number": payment.card_number},
            headers={"Authorization": "Bearer upstream-s3cret"},
            timeout=10,
        )
        result["charge"] = charge.json()
    if CELERY_BROKER:
        from .tasks import send_receipt

        send_receipt.delay(payment.id, email="user@example.com", password="hunter2")
    return JsonResponse(result, status=201)


def get_payment(request, pid):
    payment = Payment.objects.get(id=pid)
    return JsonResponse({"payment_id": payment.id, "amount": payment.amount})


@csrf_exempt
def upload(request):
    receipt = request.FILES["receipt"]
    return JsonResponse({"name": receipt.name, "size": receipt.size, "note": request.POST.get("note")})


@csrf_exempt
def body_then_files(request):
    size = len(request.body)  # the raw body first: Django then parses the upload from memory
    return JsonResponse({"size": size, "files": list(request.FILES)})


@csrf_exempt
def raw_after_files(request):
    files = list(request.FILES)
    try:
        raw = len(request.body)
    except RawPostDataException:
        raw = None  # Django refuses the raw body once the multipart stream was parsed
    return JsonResponse({"files": files, "raw": raw})


def stream(request):
    return StreamingHttpResponse((f"line-{n}\n" for n in range(3)), content_type="text/plain")


def file(request):
    return FileResponse(io.BytesIO(b"%PDF-1.4 receipt"), content_type="application/pdf", filename="receipt.pdf")


def fail(request):
    raise ValueError("card declined for card 4111 1111 1111 1111")


def ping(request):
    return HttpResponse("pong")
