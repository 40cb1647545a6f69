"""The dashboard's VPS cards: state, links to the apps River started in each VPS (Jupyter,
TensorBoard, through the host's proxy) and to a JupyterLab terminal into it, and the SSH
command, one click away.

Separate from the dashboard's task rows because a VPS is reached, not just watched: its
buttons ask the host for things (the SSH command needs the user's name, an app start waits
for the app), so they run off the kernel's thread and report back into the card.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as widgets

from river_magics.client import Client
from river_magics.display import _STATE_COLORS
from river_magics.errors import RiverError
from river_magics.vps_apps import ssh_command, start_jupyter, terminal_url


def app_links(client: Client, vps: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, URL) of each app recorded among the VPS's ports."""
    links = []
    for port in vps.get("ports") or []:
        if port.get("path"):
            label = f"{port.get('name') or 'port'} :{port.get('port')}"
            links.append((label, f"{client.url}/{port['path']}"))
    return links


class VpsCard:
    """One VPS: a label, its terminal and app links, and `ssh` / `start jupyter` buttons."""

    def __init__(self, client: Client, vps_id: str, on_change: Callable[[], None]) -> None:
        self.client = client
        self.vps_id = vps_id
        self.on_change = on_change
        self.vps: dict[str, Any] = {}
        self.label = widgets.HTML(layout=widgets.Layout(width="420px"))
        self.links = widgets.HTML()
        self.ssh = widgets.Button(description="ssh", layout=widgets.Layout(width="60px"))
        self.jupyter = widgets.Button(
            description="start jupyter", layout=widgets.Layout(width="110px")
        )
        self.note = widgets.HTML()
        self.ssh.on_click(lambda _button: self.show_ssh())
        self.jupyter.on_click(lambda _button: self.start_jupyter(background=True))
        self.box = widgets.VBox(
            [widgets.HBox([self.label, self.ssh, self.jupyter]), self.links, self.note]
        )

    def update(self, vps: Mapping[str, Any]) -> None:
        self.vps = dict(vps)
        state = str(vps.get("state"))
        color = _STATE_COLORS.get(state, "inherit")
        name = f" {html.escape(str(vps['name']))}" if vps.get("name") else ""
        node = f" on {html.escape(str(vps['node']))}" if vps.get("node") else ""
        self.label.value = (
            f"<code>{html.escape(self.vps_id)}</code>{name}: "
            f"<span style='color:{color}'>{html.escape(state)}</span>{node}"
        )
        running = state == "running"
        self.ssh.disabled = not running or vps.get("ssh", "disabled") == "disabled"
        self.jupyter.disabled = not running
        links = app_links(self.client, vps)
        if running:
            links.insert(0, ("terminal", terminal_url(self.client, self.vps_id)))
        self.links.value = " · ".join(
            f'<a href="{html.escape(url)}" target="_blank">{html.escape(label)}</a>'
            for label, url in links
        )

    def show_ssh(self) -> str:
        """What the ssh button does: put the command to paste into a shell in the card."""
        try:
            command = ssh_command(self.client, self.vps)
        except RiverError as exc:
            self.note.value = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
            return ""
        self.note.value = f"<code>{html.escape(command)}</code>"
        return command

    def start_jupyter(self, background: bool = False) -> None:
        """What the start-jupyter button does; the link appears once Jupyter answers."""
        if background:
            threading.Thread(target=self.start_jupyter, daemon=True).start()
            return
        self.note.value = "<i>starting Jupyter in the VPS ...</i>"
        try:
            url = start_jupyter(self.client, self.vps_id)
        except RiverError as exc:
            self.note.value = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
            return
        self.note.value = f'<a href="{html.escape(url)}" target="_blank">Jupyter is up</a>'
        self.on_change()
