"""History charts in the lab panel (issue #21): after a task runs, each node card's
sparkline and the cluster chart have drawn points, coloured from the current theme, in
JupyterLab's light and dark themes alike.

The lab loads this checkout's built extension (labextension/prebuilt, `jlpm build`) through
JUPYTER_PATH, ahead of the copy installed in the environment."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import ARTIFACTS, PREBUILT
from tests.browser.test_labextension import expect, open_panel
from tests.cluster import Cluster


@pytest.fixture(scope="module")
def lab(history_lab: Cluster) -> Cluster:
    """The lab shared with test_lab_dashboard_charts.py (tests/browser/conftest.py), which
    needs it next anyway: requested before the skip, so both count as its users."""
    if not (PREBUILT / "package.json").exists():
        pytest.skip("build the lab extension first: cd labextension && sh jlpm.sh build")
    return history_lab


DRAWN = """el => {
  const u = el.uplot;
  if (!u) return null;
  const canvas = el.querySelector('canvas');
  return {
    xs: u.data[0].length,
    cpu: u.data[1].filter(v => v !== null).length,
    stroke: u.series[1].stroke(),
    canvas: canvas ? canvas.width : 0,
    brand: getComputedStyle(document.body).getPropertyValue('--jp-brand-color1').trim(),
  };
}"""


def _drawn(page: Any, selector: str, least: int = 2) -> dict[str, Any]:
    element = page.locator(selector)
    expect(element).to_be_attached(timeout=60_000)
    page.wait_for_function(
        f"() => Number(document.querySelector('{selector}')?.dataset.points) >= {least}",
        timeout=60_000,
    )
    info = element.evaluate(DRAWN)
    assert info and info["xs"] >= least and info["cpu"] >= least and info["canvas"] > 0, info
    assert info["stroke"] == info["brand"], info  # coloured from the theme
    return info


def test_sparklines_and_cluster_chart_draw_points_in_both_themes(page: Any, lab: Cluster) -> None:
    open_panel(page)
    spark = '.jp-River-spark[data-spark-node="alpha"]'
    cluster = '.jp-River-chart[data-chart="cluster"]'
    light = _drawn(page, spark), _drawn(page, cluster)
    expect(page.locator('.jp-River-chart[data-chart="usage"]')).to_have_attribute(
        "data-users", "admin", timeout=60_000
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "charts-light.png"))
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme',"
        " {theme: 'JupyterLab Dark'})"
    )
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=60_000)
    page.wait_for_function(
        f"() => document.querySelector('{spark}').dataset.theme === 'JupyterLab Dark'",
        timeout=60_000,
    )
    dark = _drawn(page, spark), _drawn(page, cluster)
    assert dark[0]["stroke"] != light[0]["stroke"], (light, dark)
    page.screenshot(path=str(ARTIFACTS / "charts-dark.png"))
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme',"
        " {theme: 'JupyterLab Light'})"
    )
