/**
 * "Copy to checkpoint…": the dialog (name validated as you type, destination store) and the
 * copy itself, a job on the server shown as a notification with a progress bar.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { ApiError, ICopyRequest, IEntry, startCopy } from './api';
import { formatBytes } from './format';
import { JobTracker } from './model';
import { nameProblem, suggestName } from './names';

/** What the dialog asks. */
export interface ICopyChoice {
  src: string;
  name: string;
  to: string;
}

/** The dialog's body: source, name and destination store. */
export class CopyDialogBody extends Widget implements Dialog.IBodyWidget<ICopyChoice> {
  constructor(options: { src: string; to: string; srcIsRef?: boolean; store?: string }) {
    super();
    this.addClass('ckpt-CopyDialog');
    this._srcIsRef = options.srcIsRef ?? false;
    this._store = options.store;

    this._src = field(
      this.node,
      'src',
      this._srcIsRef ? 'Checkpoint' : 'Folder or file',
      options.src,
      this._srcIsRef
        ? `a checkpoint of ${options.store ?? 'the store'}`
        : 'a path relative to the server root, as the file browser shows it'
    );
    this._src.readOnly = this._srcIsRef;
    this._name = field(this.node, 'name', 'Name', suggestName(options.src), '');
    this._name.placeholder = 'e.g. baseline-v1';
    this._name.maxLength = 200;
    this._name.spellcheck = false;
    this._to = field(
      this.node,
      'to',
      'Destination store',
      options.to,
      'a folder or any fsspec URL (s3://bucket/ckpts, hf://…)'
    );
    this._problem = document.createElement('div');
    this._problem.className = 'ckpt-CopyDialog-error';
    this._problem.setAttribute('role', 'alert');
    this._problem.dataset.test = 'problem';
    this.node.appendChild(this._problem);
    for (const input of [this._src, this._name, this._to]) {
      input.addEventListener('input', () => this._validate());
    }
  }

  /** The problem with the current input (null when it can be submitted). */
  get problem(): string | null {
    if (this._src.value.trim() === '') {
      return this._srcIsRef ? 'a checkpoint is needed' : 'a folder or file is needed';
    }
    const name = nameProblem(this._name.value);
    if (name !== null) {
      return `Name: ${name}`;
    }
    if (this._to.value.trim() === '') {
      return 'a destination store is needed';
    }
    return null;
  }

  getValue(): ICopyChoice {
    return {
      src: this._src.value.trim(),
      name: this._name.value,
      to: this._to.value.trim()
    };
  }

  /** The request the dialog stands for. */
  get request(): ICopyRequest {
    const { src, name, to } = this.getValue();
    return this._srcIsRef ? { src, name, to, store: this._store } : { src, name, to };
  }

  protected onAfterAttach(): void {
    this._validate();
    this._name.focus();
    this._name.select();
  }

  private _validate(): void {
    const problem = this.problem;
    this._problem.textContent = problem ?? '';
    // :invalid inputs make JupyterLab's Dialog disable its accept button and ignore Enter.
    const nameBad = nameProblem(this._name.value);
    this._name.setCustomValidity(nameBad ?? '');
    this._name.classList.toggle('ckpt-mod-invalid', this._name.value !== '' && nameBad !== null);
    this._src.setCustomValidity(this._src.value.trim() === '' ? 'needed' : '');
    this._to.setCustomValidity(this._to.value.trim() === '' ? 'needed' : '');
    // The Dialog checks validity in a capture listener, before these inputs' listeners ran:
    // let it check again now that the validity is set.
    this.node.dispatchEvent(new Event('input', { bubbles: true }));
    const accept = this.node
      .closest('.jp-Dialog')
      ?.querySelector<HTMLButtonElement>('.jp-Dialog-button.jp-mod-accept');
    if (accept) {
      accept.disabled = problem !== null;
    }
  }

  private _src: HTMLInputElement;
  private _name: HTMLInputElement;
  private _to: HTMLInputElement;
  private _problem: HTMLElement;
  private _srcIsRef: boolean;
  private _store: string | undefined;
}

function field(
  parent: HTMLElement,
  name: string,
  label: string,
  value: string,
  hint: string
): HTMLInputElement {
  const wrapper = document.createElement('label');
  wrapper.className = 'ckpt-CopyDialog-field';
  const caption = document.createElement('span');
  caption.className = 'ckpt-CopyDialog-label';
  caption.textContent = label;
  const input = document.createElement('input');
  input.className = 'jp-mod-styled ckpt-CopyDialog-input';
  input.name = name;
  input.value = value;
  input.autocomplete = 'off';
  wrapper.append(caption, input);
  if (hint) {
    const small = document.createElement('span');
    small.className = 'ckpt-CopyDialog-hint';
    small.textContent = hint;
    wrapper.appendChild(small);
  }
  parent.appendChild(wrapper);
  return input;
}

/**
 * Ask for a copy; null when cancelled. Enter in a field submits when the input is valid.
 */
export async function askCopy(options: {
  src: string;
  to: string;
  srcIsRef?: boolean;
  store?: string;
}): Promise<ICopyRequest | null> {
  const body = new CopyDialogBody(options);
  const result = await showDialog<ICopyChoice>({
    title: 'Copy to checkpoint',
    body,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Copy' })],
    focusNodeSelector: 'input[name=name]',
    hasClose: true
  });
  if (!result.button.accept || body.problem !== null) {
    return null;
  }
  return body.request;
}

/**
 * Run a copy on the server and show it: an in-progress notification with a progress bar,
 * then success (with "Show in panel") or the one-line error.
 */
export async function runCopy(
  copy: ICopyRequest,
  jobs: JobTracker,
  reveal: (store: string, entry: IEntry) => void
): Promise<IEntry | null> {
  const what = `'${copy.src}' to checkpoint '${copy.name}'`;
  const id = Notification.emit(`Copying ${what}…`, 'in-progress', {
    autoClose: false,
    progress: 0
  });
  const fail = (message: string) => {
    Notification.update({
      id,
      type: 'error',
      message: `Copy to '${copy.name}' failed: ${message}`,
      autoClose: false
    });
    return null;
  };
  let job: string;
  try {
    job = await startCopy(copy);
  } catch (error) {
    return fail(error instanceof Error ? error.message : String(error));
  }
  const onChange = (_: JobTracker, answer: { job: string; done: number; total: number }) => {
    if (answer.job !== job) {
      return;
    }
    const progress = answer.total > 0 ? Math.min(answer.done / answer.total, 1) : undefined;
    Notification.update({
      id,
      type: 'in-progress',
      message:
        `Copying ${what}… ` +
        (answer.total > 0
          ? `${formatBytes(answer.done)} of ${formatBytes(answer.total)} (${Math.floor(100 * (progress ?? 0))}%)`
          : ''),
      progress,
      autoClose: false
    });
  };
  jobs.changed.connect(onChange);
  try {
    const end = await jobs.track(job);
    if (end.state === 'failed' || !end.checkpoint) {
      return fail(end.error?.message ?? 'the server gave no reason');
    }
    const entry = end.checkpoint;
    Notification.update({
      id,
      type: 'success',
      message: `Copied ${what} in ${end.to} (${formatBytes(entry.size)}).`,
      progress: 1,
      autoClose: 8000,
      actions: [
        {
          label: 'Show in panel',
          caption: 'Reveal the checkpoint in the Checkpoints panel',
          callback: () => reveal(end.to, entry)
        }
      ]
    });
    return entry;
  } catch (error) {
    return fail(error instanceof ApiError ? error.message : String(error));
  } finally {
    jobs.changed.disconnect(onChange);
  }
}
