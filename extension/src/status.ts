/**
 * The status-bar item of the active notebook: the last checkpoint of its store (step, age)
 * and, while a save or a copy runs, its progress. Clicking it opens the Checkpoints panel.
 *
 * Test hook: `.ckpt-StatusItem` (`data-state`: idle | none | saving | copying | error).
 */
import { Widget } from '@lumino/widgets';

import { IJob } from './api';
import { formatAge, formatBytes } from './format';
import { checkpointIcon } from './icons';
import { JobTracker, StoreWatcher } from './model';

export class CheckpointStatus extends Widget {
  constructor(options: { jobs: JobTracker; onClick: () => void }) {
    super();
    this.addClass('ckpt-StatusItem');
    this.addClass('jp-StatusBar-GroupItem');
    this._jobs = options.jobs;
    this._watcher = new StoreWatcher({ active: () => this.isVisible, interval: 5000 });
    this._watcher.changed.connect(() => this._render());
    this._jobs.changed.connect(this._onJob, this);
    this.node.appendChild(
      checkpointIcon.element({
        tag: 'span',
        className: 'ckpt-StatusItem-icon',
        height: '14px',
        width: '14px'
      })
    );
    this._text = document.createElement('span');
    this._text.className = 'jp-StatusBar-TextItem ckpt-StatusItem-text';
    this.node.appendChild(this._text);
    this.node.addEventListener('click', options.onClick);
    this.node.setAttribute('role', 'button');
    // Ages move on without the store changing.
    this._timer = window.setInterval(() => this._render(), 30000);
    this._render();
  }

  /** The store of the active notebook (null: no notebook). */
  get store(): string | null {
    return this._watcher.store;
  }

  set store(store: string | null) {
    this._watcher.store = store;
  }

  dispose(): void {
    window.clearInterval(this._timer);
    this._watcher.dispose();
    this._jobs.changed.disconnect(this._onJob, this);
    super.dispose();
  }

  private _onJob(_: JobTracker, job: IJob): void {
    this._render();
    if (job.state !== 'running' && job.to === this.store) {
      void this._watcher.reload();
    }
  }

  private _render(): void {
    const copying = this._jobs.running[0] as IJob | undefined;
    const saving = this._watcher.saving;
    const latest = this._watcher.latest;
    let state: string;
    let text: string;
    if (copying) {
      state = 'copying';
      const pct = copying.total > 0 ? ` ${Math.floor((100 * copying.done) / copying.total)}%` : '';
      text = `Copying to '${copying.name}'${pct}`;
    } else if (saving) {
      state = 'saving';
      text = `Saving step ${saving.step ?? '?'}…`;
    } else if (this._watcher.error !== null) {
      state = 'error';
      text = 'Checkpoints: store unreadable';
    } else if (latest) {
      state = 'idle';
      text = `Checkpoint: step ${latest.step ?? '?'}, ${formatAge(latest.created)}`;
    } else {
      state = 'none';
      text = this._watcher.list ? 'No checkpoint yet' : 'Checkpoints';
    }
    this.node.dataset.state = state;
    this._text.textContent = text;
    const detail = latest
      ? `\nlatest: ${latest.name ?? latest.id}, ${formatBytes(latest.size)}`
      : '';
    this.node.title =
      (this.store ? `Store: ${this.store}${detail}` : 'Checkpoints') +
      (this._watcher.error ? `\n${this._watcher.error}` : '') +
      '\nClick to open the Checkpoints panel';
  }

  private _jobs: JobTracker;
  private _watcher: StoreWatcher;
  private _text: HTMLElement;
  private _timer: number;
}
