"""Host -> runner calls, authenticated with the secret each runner gave at registration."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from river_runner.protocol import runner_auth_header


class RunnerUnreachable(Exception):
    """The runner did not answer (down, partitioned) or refused the call."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RunnerNoAnswer(RunnerUnreachable):
    """No answer at all: whether the runner acted on the call is unknown."""


# Calls in flight to one runner at a time. httpx's pool bookkeeping grows with the number
# of waiting requests times connections; a burst of hundreds of launches to one runner made
# the host's loop spend seconds in it (profiled under 200 concurrent clients).
MAX_IN_FLIGHT_PER_RUNNER = 8


class RunnerClient:
    def __init__(self, timeout: float = 10.0) -> None:
        self._http = httpx.AsyncClient(
            timeout=timeout, limits=httpx.Limits(max_keepalive_connections=64)
        )
        self._gates: dict[str, asyncio.Semaphore] = {}

    async def call(
        self,
        url: str,
        secret: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        gate = self._gates.setdefault(url, asyncio.Semaphore(MAX_IN_FLIGHT_PER_RUNNER))
        try:
            async with gate:
                extra = {} if timeout is None else {"timeout": timeout}
                response = await self._http.post(
                    url.rstrip("/") + path,
                    json=body or {},
                    headers=runner_auth_header(secret),
                    **extra,
                )
        except httpx.HTTPError as exc:
            raise RunnerNoAnswer(f"runner at {url} did not answer: {exc!r}") from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise RunnerUnreachable(
                f"runner at {url} said {response.status_code}: {message}", response.status_code
            )
        return response.json()

    async def close(self) -> None:
        await self._http.aclose()
