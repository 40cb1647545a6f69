"""Host -> runner calls, authenticated with the secret each runner gave at registration."""

from __future__ import annotations

from typing import Any

import httpx

from river_runner.protocol import runner_auth_header


class RunnerUnreachable(Exception):
    """The runner did not answer (down, partitioned) or refused the call."""


class RunnerClient:
    def __init__(self, timeout: float = 10.0) -> None:
        self._http = httpx.AsyncClient(timeout=timeout)

    async def call(
        self, url: str, secret: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            response = await self._http.post(
                url.rstrip("/") + path, json=body or {}, headers=runner_auth_header(secret)
            )
        except httpx.HTTPError as exc:
            raise RunnerUnreachable(f"runner at {url} did not answer: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise RunnerUnreachable(f"runner at {url} said {response.status_code}: {message}")
        return response.json()

    async def close(self) -> None:
        await self._http.aclose()
