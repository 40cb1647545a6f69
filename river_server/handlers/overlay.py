"""REST routes of the overlay network: allocations and IP reservations (docs/api.md)."""

from __future__ import annotations

from typing import Any

from tornado import web

from river_runner.wire.queries import AllocationRelease, ReservationList
from river_runner.wire.requests import ReservationCreate, ReservationRelease
from river_server.handlers.base import RiverAPIHandler
from river_server.overlay import OverlayError
from river_server.paging import page_of, page_request


class OverlayAPIHandler(RiverAPIHandler):
    def overlay_call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except OverlayError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None


class OverlayHandler(OverlayAPIHandler):
    @web.authenticated
    def get(self) -> None:
        self.require_role("viewer")
        self.write_json(self.river.overlay.overview())


class AllocationHandler(OverlayAPIHandler):
    queries = {"delete": AllocationRelease}

    @web.authenticated
    def delete(self, node: str) -> None:
        self.require_role("operator")
        force = self.query(AllocationRelease).force
        released = self.overlay_call(self.river.overlay.release, node, force=force)
        self.write_json({"released": released})


class ReservationsHandler(OverlayAPIHandler):
    bodies = {"post": ReservationCreate}
    queries = {"get": ReservationList}

    @web.authenticated
    def get(self) -> None:
        params = self.query(ReservationList)
        everyone = params.all
        if everyone:
            self.require_role("operator")
        page = page_request(params)
        reservations = self.river.overlay.reservations(self.username, everyone=everyone)
        reservations, following = page_of(reservations, page, "id")
        self.write_json({"reservations": reservations, "next": following})

    @web.authenticated
    def post(self) -> None:
        self.require_role("user")
        body = self.body(ReservationCreate)
        reservation = self.overlay_call(
            self.river.overlay.reserve,
            self.username,
            node=body.node or None,
            ttl=body.ttl,
            ip=body.ip or None,
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

    bodies = {"post": ReservationRelease}

    @web.authenticated
    def post(self) -> None:
        token = self.body(ReservationRelease).token
        released = self.overlay_call(
            self.river.overlay.release_reservation, token, self.username, self.role
        )
        self.write_json({"reservation": released})
