"""The ledger's one table."""

from django.db import models


class Entry(models.Model):  # type: ignore[misc]  # Django ships no type hints
    payment_id = models.CharField(max_length=20)
    amount = models.IntegerField()
    user_id = models.CharField(max_length=40, blank=True)

    class Meta:
        app_label = "ledger"
