"""One HTTP POST of a signed event to a merchant's endpoint."""

from __future__ import annotations

import aiohttp
from yarl import URL

from paymesh.platform.http_spans import aiohttp_tracing
from webhook_svc.domain.outcome import Answer
from webhook_svc.outbound.destinations import (
    AddressPolicy,
    DestinationRefused,
    GuardedResolver,
    is_ip_literal,
)


class Sender:
    """One HTTP POST of a signed event, never following a redirect, to an allowed address."""

    def __init__(self, policy: AddressPolicy, timeout_seconds: float, user_agent: str):
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._policy),
                use_dns_cache=False,  # every new connection is resolved and checked again
                limit=0,
                limit_per_host=32,
                keepalive_timeout=30,
            )
            # trust_env stays off: a proxy from the environment would hide the destination.
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, trace_configs=aiohttp_tracing()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        """The endpoint's status code and Retry-After, or an error that says why there was
        no answer."""
        host = URL(url).host or ""
        try:
            if is_ip_literal(host):  # aiohttp asks no resolver for these
                self._policy.check_addresses(host, [host])
            async with self._client().post(
                url,
                data=body,
                headers={
                    **headers,
                    "content-type": "application/json",
                    "user-agent": self._user_agent,
                },
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                # A small answer is read to its end, so the connection is reused; a large or
                # unsized one is not read at all (the connection is closed instead).
                if response.content_length is not None and response.content_length <= 65536:
                    await response.read()
                else:
                    response.close()
                return Answer(response.status, _retry_after(response.headers.get("retry-after")))
        except DestinationRefused as refused:
            return Answer(None, error=f"destination_refused: {refused}")
        except aiohttp.ClientConnectorError as error:
            if isinstance(error.os_error, DestinationRefused):
                return Answer(None, error=f"destination_refused: {error.os_error}")
            return Answer(None, error="connection_failed")
        except TimeoutError:
            return Answer(None, error="timeout")
        except aiohttp.ClientError as error:
            return Answer(None, error=f"connection_error: {type(error).__name__}")


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (HTTP also allows a date; an endpoint sending one gets the
    schedule's wait)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None
