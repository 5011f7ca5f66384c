/** Small formatting helpers shared by the panel and the status bar. */
import type { IEntry } from './api';

/** `12.3 MiB`, as ckpt_notebook.types.format_bytes writes sizes. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** `just now`, `42 s`, `5 min`, `3 h`, `2 d` ago, from an ISO time. */
export function formatAge(iso: string, now: number = Date.now()): string {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) {
    return '?';
  }
  const seconds = Math.max(0, Math.round((now - then) / 1000));
  if (seconds < 5) {
    return 'just now';
  }
  if (seconds < 60) {
    return `${seconds} s ago`;
  }
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min ago`;
  }
  const hours = Math.round(minutes / 60);
  if (hours < 48) {
    return `${hours} h ago`;
  }
  return `${Math.round(hours / 24)} d ago`;
}

/** A metric value in few characters: 0.1593, 1.2e-5, 1234.5. */
export function formatNumber(value: number | null): string {
  if (value === null) {
    return 'nan';
  }
  if (!Number.isFinite(value)) {
    return String(value);
  }
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) {
    return value.toExponential(2);
  }
  return String(Number(value.toPrecision(4)));
}

/** The metric a row shows: `loss` (or `val_loss`) when there is one, else the first. */
export function headlineMetric(entry: IEntry): [string, number | null] | null {
  const keys = Object.keys(entry.metrics ?? {});
  if (keys.length === 0) {
    return null;
  }
  const preferred = ['val_loss', 'loss'].find(k => keys.includes(k)) ?? keys[0];
  return [preferred, entry.metrics[preferred]];
}

/** The badges of a row: latest / best / named / pinned / kept / prunable. */
export function badges(entry: IEntry, isLatest: boolean): string[] {
  const out: string[] = [];
  if (isLatest) {
    out.push('latest');
  }
  if (entry.status?.reasons.some(r => r.startsWith('best'))) {
    out.push('best');
  }
  if (entry.named) {
    out.push('named');
  }
  if (entry.pinned) {
    out.push('pinned');
  }
  if (!entry.named && !entry.pinned) {
    if (entry.status) {
      out.push(entry.status.state === 'prunable' ? 'prunable' : 'kept');
    }
  }
  return out;
}

/** The line that restores a checkpoint in a notebook (as the dashboard copies it). */
export function restoreLine(entry: IEntry): string {
  // A files checkpoint holds no training state: `use` gives its files, `restore` would not.
  const verb = entry.kind === 'files' ? 'use' : 'restore';
  return `%checkpoint ${verb} ${entry.name ?? entry.id}`;
}
