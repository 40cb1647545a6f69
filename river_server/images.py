"""Who may run what in a container: River's own image namespaces and environments.

Why on the host: only the host knows who owns which VPS and which environment export, and a
runner's Docker holds every user's snapshots side by side, so a task naming
`river-vps/<id>:<n>` would otherwise read another user's disk. Checked at submission, against
the database, so a refused task never exists (and never runs).

- `river-vps/<id>:<n>` (VPS snapshots): only the VPS's owner, whatever their role (a
  snapshot is someone's whole machine; operators restart a VPS as its owner).
- `river-env/...`: never as `image`; tasks name an environment with `environment: NAME`,
  which its owner (or an operator) may use: see EnvironmentService.check_usable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from river_runner.containers import ENV_REPOSITORY, VPS_REPOSITORY, river_image
from river_server import db
from river_server.environments import EnvironmentError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from river_server.environments import EnvironmentService


class ImageRefused(Exception):
    """`owner` may not run this image or environment; `status` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_images(
    sessions: sessionmaker[Session],
    environments: EnvironmentService,
    owner: str,
    role: str,
    spec: dict[str, Any],
) -> None:
    """Raise ImageRefused when `owner` may not run `spec`'s image or environment."""
    image = spec.get("image")
    if image:
        _check_image(sessions, owner, image)
    if spec.get("environment"):
        try:
            environments.check_usable(spec["environment"], owner, role)
        except EnvironmentError as exc:
            raise ImageRefused(exc.status, str(exc)) from None


def _check_image(sessions: sessionmaker[Session], owner: str, image: str) -> None:
    found = river_image(image)
    if found is None:
        return
    repository, name = found
    if repository == ENV_REPOSITORY:
        raise ImageRefused(
            400,
            f"image {image!r} is an environment's image; name the environment instead "
            "(environment: NAME, %%river submit --environment NAME)",
        )
    assert repository == VPS_REPOSITORY
    task = None
    if name.isdigit():
        with sessions() as session:
            task = db.newest_vps_task(session, int(name))
    if task is None or task.spec["vps"].get("deleted") or task.owner != owner:
        raise ImageRefused(
            404,
            f"image {image!r}: you have no VPS {name} (VPS snapshots, river-vps/<id>:<n>, are "
            "usable by their owner only); use an image of your own or one of your "
            "VPS snapshots",
        )
