"""`%river dashboard`'s history charts in a real JupyterLab (issue #21): after a task ran,
the notebook's dashboard draws bqplot lines (SVG paths with at least two points) in the
node card's sparkline, the cluster utilisation chart and the usage chart.

Rendering is what this checks, beyond the kernel-side data (tests/integration/
test_dashboard_charts.py): that the lab loads bqplot's prebuilt extension and draws the
widgets' data. A screenshot lands in test-artifacts/browser/dashboard-charts.png."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import nbformat
import pytest

from tests.browser.test_labextension import expect, shot
from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def lab(history_lab: Cluster) -> Iterator[Cluster]:
    """JupyterLab with River, one runner, a history point per second, and one finished
    task (so the usage chart has an hour of use): shared with test_lab_charts.py
    (tests/browser/conftest.py). The notebook's kernel goes with this module."""
    try:
        yield history_lab
    finally:
        with contextlib.suppress(Exception):
            for session in history_lab.get("/api/sessions"):
                history_lab.request("DELETE", f"/api/sessions/{session['id']}")


# Per chart: the bqplot line paths drawn and how many points the longest has (an SVG path
# "M x,y L x,y ..." has one command letter per point), and the legend's texts.
DRAWN = """selector => {
  const chart = document.querySelector(selector);
  if (!chart) return null;
  const paths = [...chart.querySelectorAll('.curve path.line')];
  const points = paths.map(p => ((p.getAttribute('d') || '').match(/[MLHV]/g) || []).length);
  const legend = [...chart.querySelectorAll('text.legendtext')].map(t => t.textContent.trim());
  return {lines: paths.length, most: Math.max(0, ...points), legend};
}"""


def _drawn(page: Any, selector: str, lines: int) -> dict[str, Any]:
    page.wait_for_function(
        f"""() => {{
          const info = ({DRAWN})('{selector}');
          return info && info.lines >= {lines} && info.most >= 2;
        }}""",
        timeout=90_000,
    )
    return page.evaluate(f"({DRAWN})('{selector}')")


def test_the_dashboards_charts_draw_lines_after_a_run(page: Any, lab: Cluster) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext river_magics\n%river connect"),
        nbformat.v4.new_code_cell("%river dashboard --refresh 1"),
    ]
    response = lab.request(
        "PUT",
        "/api/contents/charts.ipynb",
        json={"type": "notebook", "format": "json", "content": notebook},
    )
    assert response.status_code in (200, 201), response.text
    page.evaluate("window.jupyterapp.commands.execute('docmanager:open', {path: 'charts.ipynb'})")
    notebook_panel = page.locator(".jp-NotebookPanel")
    expect(notebook_panel).to_be_visible(timeout=60_000)
    expect(page.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
        "data-status", "idle", timeout=90_000
    )
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    output = notebook_panel.locator(".jp-Cell").nth(1).locator(".jp-OutputArea")
    expect(output).to_contain_text("History", timeout=90_000)

    spark = _drawn(page, ".river-spark", lines=2)  # CPU and memory of alpha
    cluster = _drawn(page, ".river-chart-cluster", lines=2)
    usage = _drawn(page, ".river-chart-usage", lines=2)  # the total and the admin
    assert "cluster total" in usage["legend"] and "admin" in usage["legend"], usage
    assert "CPU %" in cluster["legend"], cluster
    assert spark["legend"] == [], spark  # a sparkline has no legend
    expect(
        output.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']")
    ).to_have_count(0)
    output.locator(".river-chart-usage").scroll_into_view_if_needed()
    shot(page, "dashboard-charts")
