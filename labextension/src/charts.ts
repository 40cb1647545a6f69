/**
 * History charts (issue #21): a sparkline per node card, a cluster utilisation chart and a
 * per-user usage chart, drawn by uPlot (small, canvas) from GET /nodes/{name}/history and
 * GET /usage/history.
 *
 * The panel re-renders its DOM on every model change, so the charts live here, not in the
 * panel: each chart is one persistent element the panel re-attaches, and its uPlot is kept
 * (rebuilt only when the theme changes, since uPlot bakes colours into its series). Colours
 * come from JupyterLab's CSS variables, read when a chart is built, so light and dark themes
 * both work. Each chart element carries `data-points` (how many points it drew) for tests
 * and assistive tools, and its uPlot as `uplot`.
 */

import uPlot from 'uplot';

import { RiverAPI, Schemas } from './api';

type NodeHistory = Schemas['NodeHistory'];
type UsageHistory = Schemas['UsageHistory'];

const REFRESH_MS = 10_000;
const NODE_WINDOW_S = 3600;
const USAGE_WINDOW_S = 7 * 86400;

function cssVar(name: string, fallback: string): string {
  const value = getComputedStyle(document.body).getPropertyValue(name).trim();
  return value || fallback;
}

/** Series colours and axis colours of the current JupyterLab theme. */
function palette(): { series: string[]; axis: string; grid: string } {
  return {
    series: [
      cssVar('--jp-brand-color1', '#1976d2'),
      cssVar('--jp-warn-color1', '#f57c00'),
      cssVar('--jp-success-color1', '#388e3c'),
      cssVar('--jp-error-color1', '#d32f2f'),
      cssVar('--jp-info-color1', '#0097a7')
    ],
    axis: cssVar('--jp-ui-font-color2', '#757575'),
    grid: cssVar('--jp-border-color2', '#e0e0e0')
  };
}

interface IChart {
  element: HTMLElement;
  plot: uPlot | null;
  labels: string[];
  data: uPlot.AlignedData;
  compact: boolean;
}

export class HistoryCharts {
  private charts = new Map<string, IChart>();
  private timer = 0;
  private observer: MutationObserver | null = null;

  constructor(
    private readonly api: RiverAPI,
    private readonly nodeNames: () => string[]
  ) {}

  /** Start refreshing, and rebuild every chart when JupyterLab switches theme. */
  start(): void {
    void this.refresh();
    this.timer = window.setInterval(() => void this.refresh(), REFRESH_MS);
    this.observer = new MutationObserver(() => this.rebuildAll());
    this.observer.observe(document.body, {
      attributes: true,
      attributeFilter: ['data-jp-theme-name', 'data-jp-theme-light']
    });
  }

  dispose(): void {
    window.clearInterval(this.timer);
    this.observer?.disconnect();
    for (const chart of this.charts.values()) {
      chart.plot?.destroy();
    }
    this.charts.clear();
  }

  /** The node card's sparkline (CPU, memory, each GPU's utilisation, percent). */
  sparkline(node: string): HTMLElement {
    return this.chart(`node:${node}`, true, el => {
      el.classList.add('jp-River-spark');
      el.dataset.sparkNode = node; // not data-node: that names the node card itself
      el.title = `${node}: CPU, memory and GPU use over the last hour`;
    }).element;
  }

  /** The cluster utilisation and per-user usage charts, for the panel's History section. */
  overview(): HTMLElement {
    const cluster = this.chart('cluster', false, el => {
      el.dataset.chart = 'cluster';
      el.title = 'Cluster utilisation (mean over nodes), last hour';
    });
    const usage = this.chart('usage', false, el => {
      el.dataset.chart = 'usage';
      el.title = 'Core-hours per hour, last 7 days';
    });
    const box = document.createElement('div');
    box.className = 'jp-River-charts';
    box.append(
      caption('Utilisation, %'),
      cluster.element,
      caption('Usage, core-hours'),
      usage.element
    );
    return box;
  }

  /** Fetch every series and redraw. Errors leave the last drawing in place. */
  async refresh(): Promise<void> {
    const now = Date.now() / 1000;
    const names = this.nodeNames();
    const histories = await Promise.all(
      names.map(name =>
        this.api
          .request<{ history: NodeHistory }>(
            `nodes/${encodeURIComponent(name)}/history`,
            {},
            { since: String(Math.floor(now - NODE_WINDOW_S)), step: '10' }
          )
          .then(answer => answer.history)
          .catch(() => null)
      )
    );
    const present: NodeHistory[] = [];
    for (const history of histories) {
      if (history) {
        present.push(history);
        this.setNode(history);
      }
    }
    this.setCluster(present);
    try {
      const answer = await this.api.request<{ usage: UsageHistory }>(
        'usage/history',
        {},
        { since: String(Math.floor(now - USAGE_WINDOW_S)), step: '3600' }
      );
      this.setUsage(answer.usage);
    } catch {
      // keep the last drawing: the host may be switching over
    }
  }

  private setNode(history: NodeHistory): void {
    const points = history.points;
    const gpus = Math.max(0, ...points.map(p => p.gpus.length));
    const labels = ['CPU %', 'Mem %'];
    const data: (number | null)[][] = [
      points.map(p => p.at),
      points.map(p => p.cpu ?? null),
      points.map(p => p.memory ?? null)
    ];
    for (let i = 0; i < gpus; i++) {
      labels.push(`GPU${i} %`);
      data.push(points.map(p => p.gpus[i]?.util ?? null));
    }
    this.draw(`node:${history.node}`, labels, data as uPlot.AlignedData);
  }

  private setCluster(histories: NodeHistory[]): void {
    const sums = new Map<number, [number, number, number, number]>();
    for (const history of histories) {
      for (const p of history.points) {
        const cell = sums.get(p.at) ?? [0, 0, 0, 0];
        if (p.cpu !== null && p.cpu !== undefined) {
          cell[0] += p.cpu;
          cell[1] += 1;
        }
        if (p.memory !== null && p.memory !== undefined) {
          cell[2] += p.memory;
          cell[3] += 1;
        }
        sums.set(p.at, cell);
      }
    }
    const at = [...sums.keys()].sort((a, b) => a - b);
    const mean = (s: number, n: number) => (n ? s / n : null);
    this.draw('cluster', ['CPU %', 'Mem %'], [
      at,
      at.map(t => mean(sums.get(t)![0], sums.get(t)![1])),
      at.map(t => mean(sums.get(t)![2], sums.get(t)![3]))
    ] as uPlot.AlignedData);
  }

  private setUsage(usage: UsageHistory): void {
    const at = usage.total.map(p => p.at);
    const index = new Map(at.map((t, i) => [t, i]));
    const labels = ['cluster total'];
    const data: (number | null)[][] = [
      at,
      usage.total.map(p => p.core_seconds / 3600)
    ];
    for (const user of usage.users) {
      const row: (number | null)[] = at.map(() => 0);
      for (const p of user.points) {
        const i = index.get(p.at);
        if (i !== undefined) {
          row[i] = p.core_seconds / 3600;
        }
      }
      labels.push(user.user);
      data.push(row);
    }
    const element = this.charts.get('usage')?.element;
    if (element) {
      element.dataset.users = usage.users.map(u => u.user).join(',');
    }
    this.draw('usage', labels, data as uPlot.AlignedData);
  }

  private chart(
    key: string,
    compact: boolean,
    init: (el: HTMLElement) => void
  ): IChart {
    let chart = this.charts.get(key);
    if (!chart) {
      const element = document.createElement('div');
      element.classList.add('jp-River-chart');
      element.dataset.points = '0';
      init(element);
      chart = { element, plot: null, labels: [], data: [[]], compact };
      this.charts.set(key, chart);
    }
    return chart;
  }

  private draw(key: string, labels: string[], data: uPlot.AlignedData): void {
    const chart = this.chart(key, key.startsWith('node:'), () => undefined);
    const sameSeries =
      chart.plot !== null && chart.labels.join('|') === labels.join('|');
    chart.labels = labels;
    chart.data = data;
    chart.element.dataset.points = String(data[0].length);
    if (sameSeries) {
      chart.plot!.setData(data);
    } else {
      this.build(chart);
    }
  }

  private rebuildAll(): void {
    for (const chart of this.charts.values()) {
      if (chart.plot) {
        this.build(chart);
      }
    }
  }

  /** (Re)create a chart's uPlot with the current theme's colours. */
  private build(chart: IChart): void {
    chart.plot?.destroy();
    const colours = palette();
    const axis = {
      stroke: colours.axis,
      grid: { stroke: colours.grid, width: 1 },
      ticks: { stroke: colours.grid, width: 1 },
      font: '10px sans-serif',
      size: 30
    };
    const width = Math.max(120, chart.element.clientWidth || 240);
    const options: uPlot.Options = {
      width,
      height: chart.compact ? 40 : 120,
      legend: { show: !chart.compact },
      cursor: { show: !chart.compact },
      scales: { x: { time: true } },
      axes: chart.compact ? [{ show: false }, { show: false }] : [axis, axis],
      series: [
        {},
        ...chart.labels.map((label, i) => ({
          label,
          stroke: colours.series[i % colours.series.length],
          width: 1.5,
          spanGaps: true
        }))
      ]
    };
    chart.plot = new uPlot(options, chart.data, chart.element);
    chart.element.dataset.theme = document.body.dataset.jpThemeName ?? '';
    (chart.element as any).uplot = chart.plot;
  }
}

function caption(text: string): HTMLElement {
  const el = document.createElement('div');
  el.className = 'jp-River-dim';
  el.textContent = text;
  return el;
}
