"""The kernel's lease for kernel-bound tasks (`bind_kernel=True`, `--bind-kernel`).

The host kills a bound task when the lease it names lapses (river_server/leases.py). A
daemon thread renews it every third of its period, so it lives exactly as long as this
process: a kernel that shuts down or dies stops renewing, with nothing to clean up. The
thread has its own HTTP connection (blocking httpx), so it renews while a cell blocks the
kernel, for the blocking and the async client alike. `release()` (a clean `close()`)
ends it at once. A lease the host no longer knows (it lapsed while this process was
stopped) is dropped, and the next bound submission makes a new one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import httpx

log = logging.getLogger("river_magics.lease")
RENEW_FRACTION = 3  # renew every seconds / 3: two lost renewals still keep it


class KernelLease:
    """One lease, renewed from a daemon thread until released or refused."""

    def __init__(
        self, lease_id: str, seconds: float, api: Callable[[], str], headers: dict[str, str]
    ) -> None:
        self.id = lease_id
        self.period = max(0.5, float(seconds) / RENEW_FRACTION)
        self._api = api  # the current host's API base (it follows failover)
        self._http = httpx.Client(headers=headers, timeout=max(2.0, self.period))
        self._stop = threading.Event()
        self.lapsed = False
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"river-lease-{lease_id}", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return not (self.lapsed or self._stop.is_set())

    def _post(self, action: str) -> httpx.Response:
        return self._http.post(f"{self._api()}/leases/{self.id}/{action}", json={})

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                response = self._post("renew")
            except httpx.HTTPError as exc:  # the host is away: try again next period
                log.debug("lease %s: renewal failed: %s", self.id, exc)
                continue
            if response.status_code in (404, 409):  # lapsed: its tasks are gone
                self.lapsed = True
                return

    def release(self) -> None:
        """End the lease now (its bound tasks are killed) and stop renewing."""
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            if not self.lapsed:
                self._post("release")
        except httpx.HTTPError as exc:  # it lapses on its own then
            log.debug("lease %s: release failed: %s", self.id, exc)
        finally:
            self._http.close()
