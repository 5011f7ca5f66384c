/**
 * The 'Checkpoints' sidebar panel: the store at the top (default: the store of the current
 * folder's notebooks), then the checkpoints, newest first, one compact row each (step, age,
 * headline metric, status badges, size) with its actions.
 *
 * Stable hooks for tests: `.ckpt-Panel`, `.ckpt-Panel input[name=store]`,
 * `.ckpt-Row[data-id=ID]`, `.ckpt-Row [data-action=copy-line|pin|verify|copy|delete]`,
 * `.ckpt-Badge[data-badge=latest|best|named|pinned|kept|prunable]`. A row's actions show
 * while it is hovered or focused.
 */
import { Clipboard, Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import {
  LabIcon,
  checkIcon,
  copyIcon,
  deleteIcon,
  duplicateIcon,
  launchIcon,
  lockIcon,
  refreshIcon,
  saveIcon
} from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import * as api from './api';
import { IEntry } from './api';
import { badges, formatAge, formatBytes, formatNumber, headlineMetric, restoreLine } from './format';
import { checkpointIcon } from './icons';
import { DefaultStores, StoreWatcher } from './model';

/** What the panel asks of the rest of the extension. */
export interface IPanelActions {
  /** Copy checkpoint `entry` of `store` to a named checkpoint (the copy dialog). */
  copyCheckpoint(store: string, entry: IEntry): void;
  /** Open the dashboard of `store` in the main area. */
  openDashboard(store: string): void;
  /** Ask the training loop on `store` to save. */
  requestSave(store: string): void;
}

export class CheckpointsPanel extends Widget {
  constructor(options: { stores: DefaultStores; actions: IPanelActions }) {
    super();
    this.id = 'ckpt-notebook-panel';
    this.addClass('ckpt-Panel');
    this.title.icon = checkpointIcon;
    this.title.caption = 'Checkpoints';
    this._stores = options.stores;
    this._actions = options.actions;
    this._watcher = new StoreWatcher({ active: () => this.isVisible });
    this._watcher.changed.connect(() => this._render());

    const header = el('div', 'ckpt-Panel-header');
    const title = el('div', 'ckpt-Panel-title');
    title.textContent = 'Checkpoints';
    const tools = el('div', 'ckpt-Panel-tools');
    tools.append(
      this._tool(refreshIcon, 'Refresh', 'refresh', () => void this._watcher.reload()),
      this._tool(saveIcon, 'Request save: the running training loop saves at its next step', 'request-save', () => {
        if (this.store) {
          this._actions.requestSave(this.store);
        }
      }),
      this._tool(launchIcon, 'Open checkpoint dashboard', 'open-dashboard', () => {
        if (this.store) {
          this._actions.openDashboard(this.store);
        }
      })
    );
    header.append(title, tools);

    const storeRow = el('form', 'ckpt-Panel-store');
    const label = el('label', 'ckpt-Panel-storeLabel');
    label.textContent = 'Store';
    this._storeInput = document.createElement('input');
    this._storeInput.name = 'store';
    this._storeInput.className = 'jp-mod-styled ckpt-Panel-storeInput';
    this._storeInput.spellcheck = false;
    this._storeInput.placeholder = 'a folder or fsspec URL';
    this._storeInput.title =
      'The store shown: a folder (relative to the server root) or any fsspec URL. ' +
      'Empty: the store of the current folder’s notebooks.';
    label.htmlFor = this._storeInput.id = 'ckpt-notebook-store-input';
    this._followButton = el('button', 'jp-Button jp-mod-minimal ckpt-Panel-follow') as HTMLButtonElement;
    this._followButton.type = 'button';
    this._followButton.textContent = 'Folder’s store';
    this._followButton.title = 'Show the store of the current folder’s notebooks again';
    this._followButton.addEventListener('click', () => void this.followFolder());
    storeRow.append(label, this._storeInput, this._followButton);
    storeRow.addEventListener('submit', event => {
      event.preventDefault();
      const value = this._storeInput.value.trim();
      if (value === '') {
        void this.followFolder();
      } else {
        this.showStore(value);
      }
    });
    this._storeInput.addEventListener('blur', () => {
      this._storeInput.value = this.store ?? '';
    });

    this._summary = el('div', 'ckpt-Panel-summary');
    this._list = el('ul', 'ckpt-List');
    this._list.setAttribute('role', 'list');
    this.node.append(header, storeRow, this._summary, this._list);
    this._render();
  }

  /** The store shown. */
  get store(): string | null {
    return this._watcher.store;
  }

  /** The watcher of the store shown (the status bar reads its state too). */
  get watcher(): StoreWatcher {
    return this._watcher;
  }

  /** Show `store` (until the user goes back to the folder's store). */
  showStore(store: string): void {
    this._following = false;
    this._watcher.store = store;
    this._render();
  }

  /** Show the default store of the folder the file browser is in, and follow it. */
  async followFolder(folder: string = this._folder): Promise<void> {
    this._following = true;
    this._folder = folder;
    try {
      const store = await this._stores.of(folder);
      if (this._following && this._folder === folder) {
        this._watcher.store = store;
      }
    } catch (error) {
      this._summary.textContent = `No store: ${error instanceof Error ? error.message : error}`;
    }
    this._render();
  }

  /** The file browser moved to `folder`: follow it unless a store was chosen. */
  folderChanged(folder: string): void {
    this._folder = folder;
    if (this._following) {
      void this.followFolder(folder);
    }
  }

  /** Show `store` and point at checkpoint `id` in it (after a copy). */
  async reveal(store: string, id: string): Promise<void> {
    if (store !== this.store) {
      this.showStore(store);
    }
    this._highlight = id;
    await this._watcher.reload();
    this._render();
    const row = this._list.querySelector<HTMLElement>(`.ckpt-Row[data-id="${CSS.escape(id)}"]`);
    row?.scrollIntoView({ block: 'nearest' });
  }

  dispose(): void {
    this._watcher.dispose();
    super.dispose();
  }

  protected onAfterShow(): void {
    void this._watcher.refresh();
  }

  private _tool(icon: LabIcon, title: string, action: string, onClick: () => void): HTMLElement {
    return iconButton(icon, title, action, 'jp-ToolbarButtonComponent ckpt-Tool', 16, onClick);
  }

  private _render(): void {
    const store = this.store;
    if (document.activeElement !== this._storeInput) {
      this._storeInput.value = store ?? '';
    }
    this._followButton.style.display = this._following ? 'none' : '';
    const list = this._watcher.list;
    const error = this._watcher.error;
    this._list.replaceChildren();
    this._summary.classList.toggle('ckpt-mod-error', error !== null);
    if (store === null) {
      this._summary.textContent = 'Finding the store of this folder…';
      return;
    }
    if (error !== null) {
      this._summary.textContent = error;
      return;
    }
    if (list === null) {
      this._summary.textContent = 'Reading the store…';
      return;
    }
    const n = list.checkpoints.length;
    const total = list.checkpoints.reduce((sum, e) => sum + (e.new_bytes ?? 0), 0);
    this._summary.textContent =
      n === 0
        ? 'No checkpoints yet. Save one with %checkpoint save, or copy a folder here.'
        : `${n} checkpoint${n === 1 ? '' : 's'}, ${formatBytes(total)}` +
          (list.unreadable.length ? `, ${list.unreadable.length} unreadable` : '');
    const latest = this._watcher.latest;
    for (const entry of list.checkpoints) {
      this._list.appendChild(this._row(store, entry, entry === latest));
    }
    for (const bad of list.unreadable) {
      const li = el('li', 'ckpt-Row ckpt-mod-unreadable');
      li.dataset.id = bad.id;
      li.textContent = `${bad.id}: ${bad.problem}`;
      this._list.appendChild(li);
    }
  }

  private _row(store: string, entry: IEntry, isLatest: boolean): HTMLElement {
    const li = el('li', 'ckpt-Row');
    li.tabIndex = 0; // focus shows the row's actions, as hover does
    li.dataset.id = entry.id;
    if (entry.name) {
      li.dataset.name = entry.name;
    }
    li.classList.toggle('ckpt-mod-highlight', entry.id === this._highlight);
    li.title = [
      entry.id,
      entry.name ? `name: ${entry.name}` : '',
      entry.run ? `run: ${entry.run}` : '',
      entry.status?.label ?? 'status unknown: the store’s policy.json does not read',
      `created ${new Date(entry.created).toLocaleString()}`,
      ...Object.entries(entry.metrics ?? {}).map(([k, v]) => `${k} = ${v}`)
    ]
      .filter(Boolean)
      .join('\n');

    const main = el('div', 'ckpt-Row-main');
    const label = el('span', 'ckpt-Row-label');
    label.textContent =
      entry.name ??
      (entry.step !== null ? `step ${entry.step}` : entry.kind === 'files' ? 'files' : entry.id);
    const badgeBox = el('span', 'ckpt-Row-badges');
    for (const badge of badges(entry, isLatest)) {
      const b = el('span', `ckpt-Badge ckpt-Badge-${badge}`);
      b.dataset.badge = badge;
      b.textContent = badge;
      badgeBox.appendChild(b);
    }
    const age = el('span', 'ckpt-Row-age');
    age.textContent = formatAge(entry.created);
    main.append(label, badgeBox, age);

    const detail = el('div', 'ckpt-Row-detail');
    const parts: string[] = [];
    if (entry.name && entry.step !== null) {
      parts.push(`step ${entry.step}`);
    }
    const metric = headlineMetric(entry);
    if (metric) {
      parts.push(`${metric[0]} ${formatNumber(metric[1])}`);
    }
    if (entry.kind === 'files') {
      parts.push('files');
    }
    const metricEl = el('span', 'ckpt-Row-metric');
    metricEl.textContent = parts.join(' · ');
    const size = el('span', 'ckpt-Row-size');
    size.textContent = formatBytes(entry.size);
    size.title = `${formatBytes(entry.size)} in all, ${formatBytes(entry.new_bytes)} new in this store`;
    detail.append(metricEl, size);

    const actions = el('div', 'ckpt-Row-actions');
    actions.append(
      this._action(
        copyIcon,
        entry.kind === 'files' ? 'Copy use line (%checkpoint use)' : 'Copy restore line',
        'copy-line',
        () => this._copyLine(entry)
      ),
      this._action(lockIcon, entry.pinned ? 'Unpin' : 'Pin (retention keeps it)', 'pin', () =>
        void this._pin(store, entry)
      ),
      this._action(checkIcon, 'Verify', 'verify', () => void this._verify(store, entry)),
      this._action(duplicateIcon, 'Copy to a named checkpoint…', 'copy', () =>
        this._actions.copyCheckpoint(store, entry)
      ),
      this._action(deleteIcon, 'Delete…', 'delete', () => void this._delete(store, entry))
    );
    actions.querySelector('[data-action=pin]')?.classList.toggle('ckpt-mod-on', entry.pinned);
    li.append(main, detail, actions);
    return li;
  }

  private _action(icon: LabIcon, title: string, action: string, onClick: () => void): HTMLElement {
    // a row's action must not also select the row
    return iconButton(icon, title, action, 'ckpt-Action', 14, event => {
      event.stopPropagation();
      onClick();
    });
  }

  private _copyLine(entry: IEntry): void {
    const line = restoreLine(entry);
    Clipboard.copyToSystem(line);
    Notification.info(`Copied: ${line}`, { autoClose: 3000 });
  }

  private async _pin(store: string, entry: IEntry): Promise<void> {
    const ref = entry.id;
    try {
      await api.setPinned(store, ref, !entry.pinned);
      Notification.success(`${entry.pinned ? 'Unpinned' : 'Pinned'} ${describe(entry)}`, {
        autoClose: 3000
      });
    } catch (error) {
      Notification.error(message(error), { autoClose: false });
    }
    await this._watcher.refresh();
  }

  private async _verify(store: string, entry: IEntry): Promise<void> {
    const id = Notification.emit(`Verifying ${describe(entry)}…`, 'in-progress', {
      autoClose: false
    });
    try {
      const result = await api.verify(store, entry.id);
      Notification.update(
        result.ok
          ? {
              id,
              type: 'success',
              message: `${describe(entry)} verifies: every blob matches its digest.`,
              autoClose: 5000
            }
          : {
              id,
              type: 'error',
              message: `${describe(entry)} does not verify: ${result.problems.join('; ')}`,
              autoClose: false
            }
      );
    } catch (error) {
      Notification.update({ id, type: 'error', message: message(error), autoClose: false });
    }
  }

  private async _delete(store: string, entry: IEntry): Promise<void> {
    const protectedEntry = entry.named || entry.pinned;
    const force = await confirmDelete(entry, protectedEntry);
    if (force === null) {
      return;
    }
    try {
      await api.deleteCheckpoint(store, entry.id, force);
      Notification.success(`Deleted ${describe(entry)}`, { autoClose: 3000 });
    } catch (error) {
      if (error instanceof api.ApiError && error.code === 'needs_force' && !force) {
        const again = await confirmDelete(entry, true);
        if (again) {
          try {
            await api.deleteCheckpoint(store, entry.id, true);
            Notification.success(`Deleted ${describe(entry)}`, { autoClose: 3000 });
          } catch (second) {
            Notification.error(message(second), { autoClose: false });
          }
        }
      } else {
        Notification.error(message(error), { autoClose: false });
      }
    }
    await this._watcher.reload();
  }

  private _watcher: StoreWatcher;
  private _stores: DefaultStores;
  private _actions: IPanelActions;
  private _storeInput: HTMLInputElement;
  private _followButton: HTMLButtonElement;
  private _summary: HTMLElement;
  private _list: HTMLElement;
  private _folder = '';
  private _following = true;
  private _highlight: string | null = null;
}

/**
 * Ask before deleting; a named or pinned checkpoint needs the explicit confirmation that the
 * CLI's `--force` stands for (a ticked box). Resolves with `force`, or null when cancelled.
 */
async function confirmDelete(entry: IEntry, needsForce: boolean): Promise<boolean | null> {
  const body = new ConfirmDeleteBody(entry, needsForce);
  const result = await showDialog({
    title: `Delete ${describe(entry)}?`,
    body,
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })],
    hasClose: true
  });
  if (!result.button.accept || (needsForce && !body.forced)) {
    return null;
  }
  return needsForce;
}

class ConfirmDeleteBody extends Widget {
  constructor(entry: IEntry, needsForce: boolean) {
    super();
    this.addClass('ckpt-DeleteDialog');
    const text = el('p', 'ckpt-DeleteDialog-text');
    text.textContent = needsForce
      ? `${describe(entry)} is ${entry.named ? 'a named checkpoint: names are write-once and retention never deletes it' : 'pinned: retention keeps it'}. Deleting it cannot be undone.`
      : `Its blobs are freed by the next gc unless other checkpoints share them. This cannot be undone.`;
    this.node.appendChild(text);
    this._needsForce = needsForce;
    if (needsForce) {
      const label = el('label', 'ckpt-DeleteDialog-force');
      this._force = document.createElement('input');
      this._force.type = 'checkbox';
      this._force.name = 'force';
      this._force.addEventListener('change', () => this._update());
      label.append(this._force, ` Delete the ${entry.named ? 'named' : 'pinned'} checkpoint anyway (--force)`);
      this.node.appendChild(label);
    }
  }

  get forced(): boolean {
    return this._force?.checked ?? false;
  }

  protected onAfterAttach(): void {
    this._update();
  }

  private _update(): void {
    const button = this.node
      .closest('.jp-Dialog')
      ?.querySelector<HTMLButtonElement>('.jp-Dialog-button.jp-mod-accept');
    if (button && this._needsForce) {
      button.disabled = !this.forced;
    }
  }

  private _force: HTMLInputElement | null = null;
  private _needsForce: boolean;
}

function describe(entry: IEntry): string {
  if (entry.name) {
    return `'${entry.name}'`;
  }
  return entry.step !== null ? `step ${entry.step} (${entry.id})` : entry.id;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}

/** A minimal button showing `icon`, named by `title` for screen readers and by `action` for tests. */
function iconButton(
  icon: LabIcon,
  title: string,
  action: string,
  className: string,
  size: number,
  onClick: (event: MouseEvent) => void
): HTMLElement {
  const button = el('button', `jp-Button jp-mod-minimal ${className}`) as HTMLButtonElement;
  button.type = 'button';
  button.title = title;
  button.setAttribute('aria-label', title);
  button.dataset.action = action;
  button.appendChild(icon.element({ tag: 'span', height: `${size}px`, width: `${size}px` }));
  button.addEventListener('click', onClick);
  return button;
}
