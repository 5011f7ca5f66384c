/**
 * The full Panel dashboard of a store in the main area: the server serves it at
 * `{base_url}ckpt-notebook/dashboard?store=URL` behind Jupyter's own authentication, and an
 * IFrame shows it (same origin, so the login cookie goes with it).
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { IFrame } from '@jupyterlab/ui-components';

import { dashboardUrl } from './api';
import { checkpointIcon } from './icons';

let counter = 0;

/** A dashboard tab for `store`. */
export function createDashboard(store: string): MainAreaWidget<IFrame> {
  const frame = new IFrame({
    // The dashboard is our own page on this server: scripts and its cookie are needed
    // (Bokeh's websocket); popups for its downloads.
    sandbox: ['allow-scripts', 'allow-same-origin', 'allow-forms', 'allow-downloads', 'allow-popups']
  });
  frame.url = dashboardUrl(store);
  frame.addClass('ckpt-Dashboard');
  const widget = new MainAreaWidget({ content: frame });
  widget.id = `ckpt-notebook-dashboard-${counter++}`;
  widget.title.label = `Checkpoints: ${shortStore(store)}`;
  widget.title.caption = `Checkpoint dashboard of ${store}`;
  widget.title.icon = checkpointIcon;
  widget.title.closable = true;
  widget.node.dataset.store = store;
  return widget;
}

/** The last two parts of a store URL, for a tab label. */
export function shortStore(store: string): string {
  const parts = store.replace(/\/+$/, '').split('/');
  return parts.slice(-2).join('/') || store;
}

