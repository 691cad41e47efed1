"""The demo's ledger service: a small Django project (settings in code, its ORM on SQLite) served by a real WSGI
server. The payment service records every charged payment here with ``requests``.

Call :func:`configure` before ``gotrails_otel.instrument()`` (the Django instrumentation adds its middleware to
the configured settings), then :func:`wsgi_app` and :func:`create_tables` after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["configure", "create_tables", "wsgi_app"]


def configure(database: Path) -> None:
    """Configure Django for the ledger (once per process) with its SQLite database at ``database``."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="demo-only",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF="gotrails_otel.demo.ledger.urls",
        INSTALLED_APPS=["gotrails_otel.demo.ledger"],
        MIDDLEWARE=[],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(database)}},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()


def create_tables() -> None:
    """Create the ledger's table (start-up SQL: outside any request, so in no trail)."""
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)


def wsgi_app() -> Any:
    """The ledger's WSGI application (build it after ``gotrails_otel.instrument()``)."""
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()
