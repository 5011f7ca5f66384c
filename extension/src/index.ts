/**
 * ckpt_notebook in JupyterLab: the 'Checkpoints' sidebar panel, 'Copy to checkpoint…' in the
 * file browser, the dashboard in the main area, a status-bar item, and their commands:
 *
 * - `ckpt-notebook:open-panel`          show the Checkpoints panel
 * - `ckpt-notebook:open-dashboard`      the dashboard of a store (`{store?}`)
 * - `ckpt-notebook:copy-to-checkpoint`  copy a folder/file (`{path?}`) or a checkpoint
 *                                        (`{ref, store}`) to a named checkpoint
 * - `ckpt-notebook:request-save`        ask the training loop on a store to save (`{store?}`)
 *
 * Everything goes through the server extension's REST API (docs/rest-api.md, api.ts).
 */
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { IFrame } from '@jupyterlab/ui-components';
import { Signal } from '@lumino/signaling';

import { IEntry, requestSave, requestState, setServerSettings } from './api';
import { askCopy, runCopy } from './copy';
import { createDashboard } from './dashboard';
import { checkpointIcon } from './icons';
import { DefaultStores, JobTracker, folderOf } from './model';
import { CheckpointsPanel } from './panel';
import { CheckpointStatus } from './status';

export namespace CommandIDs {
  export const openPanel = 'ckpt-notebook:open-panel';
  export const openDashboard = 'ckpt-notebook:open-dashboard';
  export const copyToCheckpoint = 'ckpt-notebook:copy-to-checkpoint';
  export const requestSave = 'ckpt-notebook:request-save';
}

const CATEGORY = 'Checkpoints';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'ckpt-notebook:plugin',
  description: 'Checkpoints of PyTorch training in JupyterLab (ckpt_notebook).',
  autoStart: true,
  optional: [
    ILabShell,
    ILayoutRestorer,
    ICommandPalette,
    IMainMenu,
    IDefaultFileBrowser,
    IStatusBar,
    INotebookTracker
  ],
  activate: (
    app: JupyterFrontEnd,
    labShell: ILabShell | null,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    mainMenu: IMainMenu | null,
    browser: IDefaultFileBrowser | null,
    statusBar: IStatusBar | null,
    notebooks: INotebookTracker | null
  ) => {
    setServerSettings(app.serviceManager.serverSettings);
    const { commands, shell } = app;
    const stores = new DefaultStores();
    const jobs = new JobTracker();
    const dashboards = new Map<string, MainAreaWidget<IFrame>>();
    const currentFolder = () => browser?.model.path ?? '';

    const reveal = (store: string, entry: IEntry) => {
      shell.activateById(panel.id);
      void panel.reveal(store, entry.id);
    };

    const panel = new CheckpointsPanel({
      stores,
      actions: {
        copyCheckpoint: (store, entry) =>
          void commands.execute(CommandIDs.copyToCheckpoint, { ref: entry.id, store }),
        openDashboard: store => void commands.execute(CommandIDs.openDashboard, { store }),
        requestSave: store => void commands.execute(CommandIDs.requestSave, { store })
      }
    });
    shell.add(panel, 'left', { rank: 650 });
    // A copy into the panel's store shows there at once, even while the panel is hidden.
    jobs.changed.connect((_, job) => {
      if (job.state === 'done' && job.to === panel.store) {
        void panel.watcher.reload();
      }
    });
    restorer?.add(panel, 'ckpt-notebook-panel');
    if (browser) {
      browser.model.pathChanged.connect(() => panel.folderChanged(currentFolder()));
    }
    void app.restored.then(() => panel.followFolder(currentFolder()));

    const storeArg = async (args: Record<string, unknown>): Promise<string> =>
      typeof args.store === 'string' && args.store
        ? args.store
        : (panel.store ?? (await stores.of(currentFolder())));

    commands.addCommand(CommandIDs.openPanel, {
      label: 'Show Checkpoints Panel',
      caption: 'The checkpoints of the current folder’s store',
      icon: checkpointIcon,
      execute: () => shell.activateById(panel.id)
    });

    commands.addCommand(CommandIDs.openDashboard, {
      label: 'Open Checkpoint Dashboard',
      caption: 'The full checkpoint dashboard of a store, in the main area',
      icon: args => (args.isPalette ? undefined : checkpointIcon),
      execute: async args => {
        const store = await storeArg(args);
        let widget = dashboards.get(store);
        if (!widget || widget.isDisposed) {
          widget = createDashboard(store);
          dashboards.set(store, widget);
          shell.add(widget, 'main');
        }
        shell.activateById(widget.id);
        return widget;
      }
    });

    commands.addCommand(CommandIDs.copyToCheckpoint, {
      label: args => (args.ref ? 'Copy to Named Checkpoint…' : 'Copy to Checkpoint…'),
      caption: 'Copy a folder, a file or a checkpoint into a named, immutable checkpoint',
      icon: args => (args.isPalette ? undefined : checkpointIcon),
      execute: async args => {
        const folder = currentFolder();
        let request;
        if (typeof args.ref === 'string' && args.ref) {
          const store = await storeArg(args);
          request = await askCopy({ src: args.ref, srcIsRef: true, store, to: store });
        } else {
          const selected = browser?.selectedItems().next();
          const path =
            typeof args.path === 'string'
              ? args.path
              : selected && !selected.done
                ? selected.value.path
                : folder;
          let to = '';
          try {
            to = await stores.of(folder);
          } catch (error) {
            Notification.warning(`No default store: ${error}`, { autoClose: 5000 });
          }
          request = await askCopy({ src: path, to });
        }
        if (request) {
          return runCopy(request, jobs, reveal);
        }
        return null;
      }
    });

    commands.addCommand(CommandIDs.requestSave, {
      label: 'Request Checkpoint Save',
      caption: 'Ask the running training loop to save at its next step',
      execute: async args => {
        const store = await storeArg(args);
        try {
          const id = await requestSave(store);
          const note = Notification.info(
            `Save requested: the training loop on ${store} saves at its next step(); ` +
              'with no loop running, the request expires unsaved in 2 minutes.',
            { autoClose: false }
          );
          void followRequest(store, id, note);
        } catch (error) {
          Notification.error(`Request save failed: ${error instanceof Error ? error.message : error}`, {
            autoClose: false
          });
        }
      }
    });

    app.contextMenu.addItem({
      command: CommandIDs.copyToCheckpoint,
      selector: '.jp-DirListing-item[data-isdir]',
      rank: 10
    });

    if (palette) {
      for (const command of Object.values(CommandIDs)) {
        palette.addItem({ command, category: CATEGORY, args: { isPalette: true } });
      }
    }

    if (mainMenu) {
      mainMenu.viewMenu.addGroup(
        [{ command: CommandIDs.openPanel }, { command: CommandIDs.openDashboard }],
        60
      );
    }

    if (statusBar && notebooks) {
      const item = new CheckpointStatus({
        jobs,
        onClick: () => void commands.execute(CommandIDs.openPanel)
      });
      const follow = async () => {
        const notebook = notebooks.currentWidget;
        if (!notebook) {
          item.store = null;
          return;
        }
        await notebook.context.ready;
        try {
          item.store = await stores.of(folderOf(notebook.context.path));
        } catch {
          item.store = null;
        }
      };
      // Shown while a notebook is the main area's current widget.
      const activeChanged = new Signal<CheckpointStatus, void>(item);
      notebooks.currentChanged.connect(() => {
        void follow();
        activeChanged.emit();
      });
      labShell?.currentChanged.connect(() => activeChanged.emit());
      void follow();
      statusBar.registerStatusItem('ckpt-notebook:status', {
        item,
        align: 'left',
        rank: 10,
        isActive: () =>
          notebooks.currentWidget !== null &&
          (labShell ? labShell.currentWidget === notebooks.currentWidget : true),
        activeStateChanged: activeChanged
      });
    }
  }
};

export default plugin;

/** Tell whether a loop took a save request: poll its state until it is taken or expired. */
async function followRequest(store: string, id: string, note: string): Promise<void> {
  const deadline = Date.now() + 150_000;
  while (Date.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 2000));
    let state;
    try {
      state = await requestState(store, id);
    } catch {
      continue; // a passing network error: ask again
    }
    if (state === 'taken') {
      Notification.update({
        id: note,
        message: `A training loop on ${store} took the save request: it saves at its next step().`,
        type: 'success',
        autoClose: 5000
      });
      return;
    }
    if (state === 'expired') {
      Notification.update({
        id: note,
        message: `No training loop on ${store} took the save request; it expired unsaved.`,
        type: 'warning',
        autoClose: false
      });
      return;
    }
  }
}
