from django.db import models


class Payment(models.Model):
    id = models.CharField(primary_key=True, max_length=20)
    amount = models.IntegerField()
    card_number = models.CharField(max_length=32)
    status = models.CharField(max_length=16, default="PENDING")

    class Meta:
        app_label = "djangoapp"
