from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

import gotrails_otel as gt

provider = TracerProvider(resource=Resource.create({"service.name": "payment-service"}))
provider.add_span_processor(gt.TrailProcessor(gt.StdoutTrailExporter()))
trace.set_tracer_provider(provider)
server = provider.get_tracer("opentelemetry.instrumentation.fastapi")  # what FastAPI's instrumentation makes
httpx = provider.get_tracer("opentelemetry.instrumentation.httpx")  # what httpx's instrumentation makes

http_in = {"http.request.method": "POST", "url.path": "/v1/payments", "http.response.status_code": 201}
with server.start_as_current_span("POST /v1/payments", kind=SpanKind.SERVER, attributes=http_in):
    with gt.step("ValidateRequest"):
        gt.set_metadata(user_id="u-123")
    http_out = {"http.request.method": "POST", "url.full": "https://api.midtrans.com/v2/charge"}
    with httpx.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes=http_out) as span:
        span.set_attribute("http.response.status_code", 201)
provider.shutdown()  # flushes: one JSON line, one trail
