"""`GET /river/api/share`: fair share as the scheduler sees it (river_server/fairshare.py).

Its own module because it answers for every user at once: names and usage figures only,
never what anyone's tasks are (docs/security.md, "Fair share")."""

from __future__ import annotations

import time

from tornado import web

from river_server.handlers.base import RiverAPIHandler
from river_server.usage import share_json


class ShareHandler(RiverAPIHandler):
    @web.authenticated
    async def get(self) -> None:
        settings, sessions = self.river.tasks.fair_share, self.river.sessions

        def reading() -> dict:
            with sessions() as session:
                return share_json(session, settings, time.time())

        self.write_json({"share": await self.river.db.read(reading)})
