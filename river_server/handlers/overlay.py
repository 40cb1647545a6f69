"""REST routes of the overlay network: allocations and IP reservations (docs/api.md)."""

from __future__ import annotations

from typing import Any

from tornado import web

from river_server.handlers.base import RiverAPIHandler
from river_server.overlay import OverlayError
from river_server.paging import page_of, page_request


class OverlayAPIHandler(RiverAPIHandler):
    def overlay_call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except OverlayError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None

    def flag(self, name: str) -> bool:
        return self.get_argument(name, "0") not in ("0", "", "false")


class OverlayHandler(OverlayAPIHandler):
    @web.authenticated
    def get(self) -> None:
        self.require_role("viewer")
        self.write_json(self.river.overlay.overview())


class AllocationHandler(OverlayAPIHandler):
    @web.authenticated
    def delete(self, node: str) -> None:
        self.require_role("operator")
        released = self.overlay_call(self.river.overlay.release, node, force=self.flag("force"))
        self.write_json({"released": released})


class ReservationsHandler(OverlayAPIHandler):
    @web.authenticated
    def get(self) -> None:
        everyone = self.flag("all")
        if everyone:
            self.require_role("operator")
        page = page_request(self)
        reservations = self.river.overlay.reservations(self.username, everyone=everyone)
        reservations, following = page_of(reservations, page, "id")
        self.write_json({"reservations": reservations, "next": following})

    @web.authenticated
    def post(self) -> None:
        self.require_role("user")
        body = self.json_body()
        unknown = set(body) - {"node", "ttl", "ip"}
        if unknown:
            raise web.HTTPError(400, f"unknown field(s) {', '.join(sorted(unknown))}")
        reservation = self.overlay_call(
            self.river.overlay.reserve,
            self.username,
            node=body.get("node") or None,
            ttl=body.get("ttl"),
            ip=body.get("ip") or None,
        )
        self.write_json({"reservation": reservation}, status=201)


class ReservationHandler(OverlayAPIHandler):
    @web.authenticated
    def delete(self, reservation_id: str) -> None:
        if not reservation_id.isdigit():
            raise web.HTTPError(
                400, "give the reservation's id; to release by token POST {token} to .../release"
            )
        released = self.overlay_call(
            self.river.overlay.release_reservation, reservation_id, self.username, self.role
        )
        self.write_json({"reservation": released})


class ReleaseByTokenHandler(OverlayAPIHandler):
    """POST {"token": T}: release by token (kept out of URLs, which servers log)."""

    @web.authenticated
    def post(self) -> None:
        token = self.json_body().get("token")
        if not isinstance(token, str) or not token.startswith("rip_"):
            raise web.HTTPError(400, "body needs 'token': the rip_... token of the reservation")
        released = self.overlay_call(
            self.river.overlay.release_reservation, token, self.username, self.role
        )
        self.write_json({"reservation": released})
