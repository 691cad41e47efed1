from django.urls import path

from . import views

urlpatterns = [
    path("api/payments", views.create_payment),
    path("api/payments/<str:pid>", views.get_payment),
    path("api/upload", views.upload),
    path("api/raw", views.raw_after_files),
    path("api/body-then-files", views.body_then_files),
    path("api/stream", views.stream),
    path("api/file", views.file),
    path("api/fail", views.fail),
]
