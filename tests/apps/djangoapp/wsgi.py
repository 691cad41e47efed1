"""WSGI entry point. With GOTRAILS_MANUAL=1 the service sets OpenTelemetry and gotrails up itself (one call),
as a service that does not run under opentelemetry-instrument would."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoapp.settings")

if os.environ.get("GOTRAILS_MANUAL"):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    import gotrails_otel

    trace.set_tracer_provider(TracerProvider())
    gotrails_otel.instrument()

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
