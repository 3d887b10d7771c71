"""The server interceptor every RPC passes through: request metrics, log context, and the
one place where exceptions become gRPC statuses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeAlias, cast

import grpc
import psycopg
import structlog
from sqlalchemy.exc import InterfaceError, OperationalError

from paymesh.platform import errors, problems
from paymesh.platform.idempotency.rpc import call_key
from paymesh.platform.masking import last4
from paymesh.platform.metrics import REQUEST_DURATION, REQUESTS
from paymesh.platform.request_guard import check_request, lenient

log = structlog.get_logger(__name__)

# The database could not be reached (down, restarting, a connection cut) or gave a
# transaction up (psycopg counts serialization failures, deadlocks and timeouts as operational
# errors too): a retry may succeed, so callers get 503, not 500. Under an Idempotency-Key a
# retry is safe whatever was done; without one, a write may or may not have been done, and
# the caller is told so rather than advised to use a key it never sent.
DATABASE_OUTAGES = (OperationalError, InterfaceError, psycopg.OperationalError)
DATABASE_UNAVAILABLE = problems.Unavailable(
    "the database is unavailable: retry with the same Idempotency-Key",
    reason="database_unavailable",
)
DATABASE_UNAVAILABLE_KEYLESS = problems.Unavailable(
    "the database is unavailable: a change this request asked for may or may not have been"
    " made, so look the object up before sending the request again",
    reason="database_unavailable",
)


def _database_unavailable(context_vars: dict[str, str]) -> problems.Unavailable:
    return (
        DATABASE_UNAVAILABLE
        if context_vars.get("idempotency_key")
        else DATABASE_UNAVAILABLE_KEYLESS
    )


# Request metadata bound into every log line of the call (values of secrets are masked).
_LOGGED_METADATA = {
    "x-request-id": "request_id",
    "idempotency-key": "idempotency_key",
}


def _log_context(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    context: dict[str, str] = {}
    for key, value in metadata or ():
        if key in _LOGGED_METADATA and isinstance(value, str):
            context[_LOGGED_METADATA[key]] = value
        elif key == "authorization" and isinstance(value, str):
            context["api_key"] = last4(value.removeprefix("Bearer ").strip())
    return context


# What a method handler is given and gives back: the generated servicers' messages.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
# grpc.aio's handlers are coroutine functions (the stubs type them as grpc's synchronous ones).
UnaryBehavior = Callable[[Any, Context], Awaitable[Any]]
StreamBehavior = Callable[[Any, Context], AsyncIterator[Any]]


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, service: str):
        self._service = service
        # The wrapped handler of each method, built on its first call: building it again on
        # every call was a measurable share of a small RPC.
        self._wrapped: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        full_method = handler_call_details.method
        wrapped = self._wrapped.get(full_method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        # Our server-streaming RPCs get the same error translation; gRPC's own streaming RPCs
        # (health Watch, reflection) pass through untouched.
        if handler.unary_stream is not None and not full_method.startswith("/grpc."):
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(
                    cast(StreamBehavior, handler.unary_stream), full_method.rsplit("/", 1)[-1]
                ),
                request_deserializer=lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
            self._wrapped[full_method] = wrapped
            return wrapped
        if handler.unary_unary is None:
            return handler
        # Health probes arrive every few seconds from Envoy and Docker: metrics, but no log line.
        logged = not full_method.startswith("/grpc.health.")
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(
                cast(UnaryBehavior, handler.unary_unary), full_method.rsplit("/", 1)[-1], logged
            ),
            request_deserializer=lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        self._wrapped[full_method] = wrapped
        return wrapped

    def _wrap(self, behavior: UnaryBehavior, method: str, logged: bool) -> UnaryBehavior:
        service = self._service
        duration = REQUEST_DURATION.labels(service, method)

        async def handle(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            metadata = context.invocation_metadata()
            context_vars = _log_context(metadata)
            request_id = context_vars.get("request_id", "")
            with (
                structlog.contextvars.bound_contextvars(rpc=method, **context_vars),
                call_key(metadata),
            ):
                try:
                    check_request(request)
                    response = await behavior(request, context)
                    code = context.code() or grpc.StatusCode.OK
                    return response
                except problems.PaymeshError as error:
                    code = errors.grpc_code(error)
                    structlog.contextvars.bind_contextvars(reason=error.reason)
                    await _abort(context, error, request_id)
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except DATABASE_OUTAGES as error:
                    code = grpc.StatusCode.UNAVAILABLE
                    log.warning("rpc_database_unavailable", error=type(error).__name__)
                    await _abort(context, _database_unavailable(context_vars), request_id)
                except Exception as error:  # noqa: BLE001 - the generic fallback, by design
                    code = grpc.StatusCode.INTERNAL
                    log.exception("rpc_failed")
                    await _abort(context, error, request_id)
                finally:
                    elapsed = time.perf_counter() - started
                    REQUESTS.labels(service, method, code.name).inc()
                    duration.observe(elapsed)
                    if logged:
                        log.info("rpc_completed", code=code.name, ms=round(elapsed * 1e3, 2))

        return handle

    def _wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        service = self._service

        async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
            code = grpc.StatusCode.OK
            context_vars = _log_context(context.invocation_metadata())
            request_id = context_vars.get("request_id", "")
            with structlog.contextvars.bound_contextvars(rpc=method, **context_vars):
                try:
                    check_request(request)
                    async for response in behavior(request, context):
                        yield response
                except problems.PaymeshError as error:
                    code = errors.grpc_code(error)
                    await _abort(context, error, request_id)
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except DATABASE_OUTAGES as error:
                    code = grpc.StatusCode.UNAVAILABLE
                    log.warning("rpc_database_unavailable", error=type(error).__name__)
                    await _abort(context, _database_unavailable(context_vars), request_id)
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED  # the caller hung up: a stream's end
                    raise
                except Exception as error:  # noqa: BLE001 - the generic fallback, by design
                    code = grpc.StatusCode.INTERNAL
                    log.exception("rpc_failed")
                    await _abort(context, error, request_id)
                finally:
                    REQUESTS.labels(service, method, code.name).inc()

        return handle


async def _abort(context: Context, error: Exception, request_id: str) -> None:
    status = errors.to_grpc_status(error, request_id)
    await context.abort(status.code, status.details, status.trailing_metadata)
