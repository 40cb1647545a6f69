"""Keep the Jupyter server token out of every page the host serves.

River makes the server token act as the admin. Jupyter would hand it to every browser:
JupyterLab writes it into the `/lab` page config (`page_config_data["token"]`), and
jupyter_server's page template puts it in `data-jupyter-api-token` of any HTML page (error
and 404 pages included) for whoever is logged in. So a viewer who opened JupyterLab got
the admin's credential, and River's panel called the API as the admin.

Browsers do not need it: they authenticate with their own login cookie plus the XSRF
header, which JupyterLab's ServerConnection sends when the page carries no token. So no
template is ever rendered with the token, whatever extension renders it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2


def _scrubbed(values: Mapping[str, Any]) -> dict[str, Any]:
    clean = dict(values)
    if "token" in clean:
        clean["token"] = ""
    config = clean.get("page_config")
    if isinstance(config, Mapping) and config.get("token"):
        clean["page_config"] = {**config, "token": ""}
    return clean


class TokenFreeTemplate(jinja2.Template):
    """A template whose context never holds the server token: every render path (render,
    stream, generate, async) builds its context through `new_context`."""

    def new_context(
        self,
        vars: dict[str, Any] | None = None,  # noqa: A002 (jinja2's own parameter name)
        shared: bool = False,
        locals: Mapping[str, Any] | None = None,  # noqa: A002
    ) -> Any:
        return super().new_context(_scrubbed(vars or {}), shared, locals)


def keep_token_out_of_pages(settings: dict[str, Any]) -> int:
    """Make every Jinja environment of the web app render without the token, and drop it
    from JupyterLab's page config. Call once all extensions are loaded. Returns how many
    template environments were changed."""
    page_config = settings.get("page_config_data")
    if isinstance(page_config, dict) and "token" in page_config:
        page_config["token"] = ""
    changed = 0
    for value in list(settings.values()):
        if isinstance(value, jinja2.Environment) and value.template_class is not TokenFreeTemplate:
            value.template_class = TokenFreeTemplate
            if value.cache is not None:
                value.cache.clear()  # templates already loaded were made with the old class
            changed += 1
    return changed
