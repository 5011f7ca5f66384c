/**
 * What the panel and the status bar watch: one store's checkpoint list, polled cheaply
 * (`If-None-Match`: an unchanged store answers 304 with no body), and the copy jobs this
 * browser started, polled until they end.
 */
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';
import { IDisposable } from '@lumino/disposable';

import {
  ApiError,
  ICheckpointList,
  IEntry,
  IJob,
  getConfig,
  getJob,
  listCheckpoints
} from './api';

/** How often a visible list asks whether its store changed (ms). */
export const LIST_INTERVAL = 3000;
/** How often a running copy job is polled (ms). */
export const JOB_INTERVAL = 500;

/**
 * One store's checkpoints, kept fresh while `active()` says someone looks at them.
 */
export class StoreWatcher implements IDisposable {
  constructor(options: { active?: () => boolean; interval?: number } = {}) {
    const active = options.active ?? (() => true);
    this._poll = new Poll({
      factory: () => this._fetch(),
      frequency: { interval: options.interval ?? LIST_INTERVAL, backoff: true, max: 30000 },
      standby: () => !active() || 'when-hidden',
      name: 'ckpt-notebook:checkpoints'
    });
  }

  /** Emitted when the store, its list or the error changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The store URL watched (null: none yet). */
  get store(): string | null {
    return this._store;
  }

  set store(store: string | null) {
    if (store === this._store) {
      return;
    }
    this._store = store;
    this._etag = null;
    this._list = null;
    this._error = null;
    this._changed.emit();
    void this.refresh();
  }

  /** The last list read (null before the first answer, or after an error). */
  get list(): ICheckpointList | null {
    return this._list;
  }

  /** The one-line error of the last read, if it failed. */
  get error(): string | null {
    return this._error;
  }

  /** The newest training-state checkpoint (what `latest` names). */
  get latest(): IEntry | null {
    return this._list?.checkpoints.find(e => e.kind === 'state') ?? null;
  }

  /** A checkpoint still being written (its status says `saving`). */
  get saving(): IEntry | null {
    return this._list?.checkpoints.find(e => e.status?.reasons.includes('saving')) ?? null;
  }

  /** Read the list now, visible or not (the poll goes on at its pace). */
  async refresh(): Promise<void> {
    try {
      await this._fetch();
    } catch {
      // the error is in `error`; the poll backs off on its own
    }
  }

  /** Forget the ETag and read the whole list again. */
  async reload(): Promise<void> {
    this._etag = null;
    await this.refresh();
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  private async _fetch(): Promise<void> {
    const store = this._store;
    if (store === null) {
      return;
    }
    try {
      const { list, etag } = await listCheckpoints(store, this._etag);
      if (store !== this._store) {
        return;
      }
      if (list !== null) {
        this._list = list;
        this._etag = etag;
        this._error = null;
        this._changed.emit();
      } else if (this._error !== null) {
        this._error = null;
        this._changed.emit();
      }
    } catch (error) {
      if (store !== this._store) {
        return;
      }
      const message = error instanceof Error ? error.message : String(error);
      if (message !== this._error || this._list !== null) {
        this._error = message;
        this._list = null;
        this._etag = null;
        this._changed.emit();
      }
      if (error instanceof ApiError && error.code === 'network') {
        throw error; // back off while the server is away
      }
    }
  }

  private _store: string | null = null;
  private _etag: string | null = null;
  private _list: ICheckpointList | null = null;
  private _error: string | null = null;
  private _changed = new Signal<this, void>(this);
  private _poll: Poll;
}

/**
 * The copy jobs started from this browser, polled until they are done or failed.
 */
export class JobTracker {
  /** Emitted on every change of a job's state or progress. */
  get changed(): ISignal<this, IJob> {
    return this._changed;
  }

  /** The jobs still running. */
  get running(): IJob[] {
    return [...this._jobs.values()].filter(j => j.state === 'running');
  }

  /** Poll `job` until it ends; resolves with its last answer (`done` or `failed`). */
  async track(job: string): Promise<IJob> {
    for (;;) {
      let answer: IJob;
      try {
        answer = await getJob(job);
      } catch (error) {
        if (error instanceof ApiError && error.code === 'network') {
          await sleep(JOB_INTERVAL * 4);
          continue;
        }
        throw error;
      }
      this._jobs.set(job, answer);
      this._changed.emit(answer);
      if (answer.state !== 'running') {
        this._jobs.delete(job);
        return answer;
      }
      await sleep(JOB_INTERVAL);
    }
  }

  private _jobs = new Map<string, IJob>();
  private _changed = new Signal<this, IJob>(this);
}

function sleep(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms));
}

/**
 * The default store of the notebooks in folder `path` (`GET config?path=`), cached: the
 * panel and the status bar ask it on every folder or notebook change.
 */
export class DefaultStores {
  async of(path: string): Promise<string> {
    let pending = this._cache.get(path);
    if (pending === undefined) {
      pending = getConfig(path).then(config => config.default_store);
      this._cache.set(path, pending);
      pending.catch(() => this._cache.delete(path));
    }
    return pending;
  }

  private _cache = new Map<string, Promise<string>>();
}

/** The folder of a file path as the file browser writes it (`a/b/c.ipynb` -> `a/b`). */
export function folderOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}
