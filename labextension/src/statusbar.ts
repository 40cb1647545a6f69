/**
 * Status-bar item: how many of my tasks run and wait; a click opens the River panel.
 */
import { Widget } from '@lumino/widgets';

import { RiverModel } from './model';

export class RiverStatus extends Widget {
  constructor(
    private readonly model: RiverModel,
    onClick: () => void
  ) {
    super();
    this.addClass('jp-River-status');
    this.node.title = 'My River tasks (click to open the River panel)';
    this.node.addEventListener('click', onClick);
    model.changed.connect(this.render, this);
    this.render();
  }

  dispose(): void {
    this.model.changed.disconnect(this.render, this);
    super.dispose();
  }

  private render(): void {
    const { running, queued } = this.model.counts();
    this.node.dataset.running = String(running);
    this.node.dataset.queued = String(queued);
    this.node.textContent = this.model.error
      ? 'River: unavailable'
      : `River: ${running} running · ${queued} queued`;
  }
}
