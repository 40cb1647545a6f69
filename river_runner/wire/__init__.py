"""River's wire contract: the typed shapes host, runner and clients exchange.

One source of truth (issue #14): request bodies are pydantic models here, the host
validates every JSON body against them (river_server/handlers/base.py `body()`), and the
OpenAPI document takes its request schemas from them (river_server/openapi_models.py);
answers are described by responses.py, from which the document's answer schemas come.
This package imports nothing of the runner agent nor of the host, so each side can import
it alone (design.md section 8).
"""

from river_runner.wire.errors import describe_errors
from river_runner.wire.requests import REQUEST_MODELS, EmptyBody, Request
from river_runner.wire.responses import RESPONSE_MODELS, Response

__all__ = [
    "REQUEST_MODELS",
    "RESPONSE_MODELS",
    "EmptyBody",
    "Request",
    "Response",
    "describe_errors",
]
