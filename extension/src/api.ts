/**
 * The REST API of the server extension, typed: docs/rest-api.md is the contract and these
 * types mirror it. Every route lives under `{base_url}ckpt-notebook/api/` and goes through
 * `ServerConnection.makeRequest`, so Jupyter's own authentication (token or cookie, and the
 * `X-XSRFToken` header on writes) comes with every request.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The retention state of one checkpoint (`ckpt ls` STATUS column). */
export interface IStatus {
  /** The label the CLI and the dashboard show: `kept: best loss #1, latest 1/3`. */
  label: string;
  state: 'kept' | 'pinned' | 'named' | 'prunable';
  reasons: string[];
}

/** One checkpoint (`Entry` in docs/rest-api.md). */
export interface IEntry {
  id: string;
  name: string | null;
  run: string | null;
  step: number | null;
  epoch: number | null;
  /** ISO 8601 with a timezone. */
  created: string;
  /** Non-finite metrics are null. */
  metrics: Record<string, number | null>;
  /** null when the store's policy.json does not read. */
  status: IStatus | null;
  pinned: boolean;
  named: boolean;
  kind: 'state' | 'files';
  size: number;
  new_bytes: number;
  tags: string[];
}

/** `GET config?path=DIR` */
export interface IConfig {
  version: string;
  root: string;
  /** The store a notebook in DIR uses, as the extension shows and sends it. */
  default_store: string;
  dashboard_url: string;
}

/** `GET checkpoints?store=URL` */
export interface ICheckpointList {
  store: string;
  /** Newest first. */
  checkpoints: IEntry[];
  unreadable: { id: string; problem: string }[];
}

/** The `{code, message}` body of every error answer. */
export interface IErrorBody {
  code: ErrorCode;
  message: string;
}

export type ErrorCode =
  | 'bad_request'
  | 'invalid_name'
  | 'forbidden_path'
  | 'not_found'
  | 'exists'
  | 'needs_force'
  | 'busy'
  | 'unsafe_source'
  | 'integrity'
  | 'internal'
  | 'store_error';

/** `POST copies` (`to` left out: the root's default store; `store` left out: `to`). */
export interface ICopyRequest {
  /** A path relative to the server root, or a checkpoint REF of `store`. */
  src: string;
  name: string;
  to?: string;
  store?: string;
}

/** `GET copies/ID` */
export interface IJob {
  job: string;
  state: 'running' | 'done' | 'failed';
  done: number;
  total: number;
  src: string;
  name: string;
  to: string;
  checkpoint?: IEntry;
  error?: IErrorBody;
}

/** `POST verify` */
export interface IVerifyResult {
  checkpoint: string;
  ok: boolean;
  problems: string[];
}

/**
 * An error answer of the API: `code` from the body (`network` when no answer came) and the
 * one-line `message` the CLI would print.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode | 'network' | 'unknown',
    message: string
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The root of the API: `{base_url}ckpt-notebook/api/`. */
export const API_NAMESPACE = 'ckpt-notebook/api';

let defaultSettings: ServerConnection.ISettings | null = null;

/** Use the application's server settings (`app.serviceManager.serverSettings`). */
export function setServerSettings(settings: ServerConnection.ISettings): void {
  defaultSettings = settings;
}

function settingsOrDefault(
  settings?: ServerConnection.ISettings
): ServerConnection.ISettings {
  if (settings) {
    return settings;
  }
  defaultSettings = defaultSettings ?? ServerConnection.makeSettings();
  return defaultSettings;
}

/** The URL of a route, with its query (values left out when undefined). */
export function apiUrl(
  route: string,
  query: Record<string, string | undefined> = {},
  settings?: ServerConnection.ISettings
): string {
  const base = URLExt.join(settingsOrDefault(settings).baseUrl, API_NAMESPACE, route);
  const defined: Record<string, string> = {};
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined) {
      defined[key] = value;
    }
  }
  const search = URLExt.objectToQueryString(defined);
  return search === '?' ? base : base + search;
}

/** The answer of one request: `status`, the parsed body (null on 304) and the ETag. */
export interface IAnswer<T> {
  status: number;
  body: T | null;
  etag: string | null;
}

/**
 * One request to the API. Answers with a status >= 400 throw an {@link ApiError} carrying the
 * server's `{code, message}`; 304 (for `If-None-Match`) answers with `body: null`.
 */
export async function request<T>(
  route: string,
  init: RequestInit & { query?: Record<string, string | undefined> } = {},
  settings?: ServerConnection.ISettings
): Promise<IAnswer<T>> {
  const s = settingsOrDefault(settings);
  const { query, ...rest } = init;
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(apiUrl(route, query, s), rest, s);
  } catch (error) {
    throw new ApiError(0, 'network', `the Jupyter server cannot be reached: ${error}`);
  }
  const etag = response.headers.get('ETag');
  if (response.status === 304) {
    return { status: 304, body: null, etag };
  }
  const text = await response.text();
  let data: unknown = null;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const body = data as Partial<IErrorBody> | null;
    if (body && typeof body.message === 'string' && typeof body.code === 'string') {
      throw new ApiError(response.status, body.code, body.message);
    }
    throw new ApiError(
      response.status,
      'unknown',
      `${response.status} ${response.statusText || 'error'} from ${route}`
    );
  }
  return { status: response.status, body: data as T, etag };
}

function post<T>(route: string, body: object): Promise<T> {
  return request<T>(route, { method: 'POST', body: JSON.stringify(body) }).then(
    answer => answer.body as T
  );
}

/** `GET config?path=DIR`: the default store of the notebooks in DIR, and more. */
export async function getConfig(path = ''): Promise<IConfig> {
  const answer = await request<IConfig>('config', { query: { path } });
  return answer.body as IConfig;
}

/**
 * `GET checkpoints?store=URL`, conditional on `etag`: `list` is null when nothing changed.
 */
export async function listCheckpoints(
  store: string,
  etag: string | null = null
): Promise<{ list: ICheckpointList | null; etag: string | null }> {
  const headers: Record<string, string> = {};
  if (etag) {
    headers['If-None-Match'] = etag;
  }
  const answer = await request<ICheckpointList>('checkpoints', {
    query: { store },
    headers,
    cache: 'no-store'
  });
  return { list: answer.body, etag: answer.etag ?? etag };
}

/** `POST copies`: starts a copy job on the server. */
export async function startCopy(copy: ICopyRequest): Promise<string> {
  const answer = await post<{ job: string }>('copies', copy);
  return answer.job;
}

/** `GET copies/ID` */
export async function getJob(job: string): Promise<IJob> {
  const answer = await request<IJob>(`copies/${encodeURIComponent(job)}`);
  return answer.body as IJob;
}

/** `POST requests`: the training loop on `store` saves at its next `step()`. */
export async function requestSave(store: string): Promise<string> {
  const answer = await post<{ request: string }>('requests', { store });
  return answer.request;
}

/** Where a save request stands: a loop took it, it still waits, or it expired unsaved. */
export type RequestState = 'pending' | 'taken' | 'expired';

/** `GET requests/ID?store=URL` */
export async function requestState(store: string, id: string): Promise<RequestState> {
  const answer = await request<{ request: string; state: RequestState }>(
    `requests/${encodeURIComponent(id)}`,
    { query: { store } }
  );
  return (answer.body as { state: RequestState }).state;
}

/** `POST verify` */
export function verify(store: string, ref: string): Promise<IVerifyResult> {
  return post<IVerifyResult>('verify', { store, ref });
}

/** `POST pin` or `POST unpin` */
export async function setPinned(store: string, ref: string, pinned: boolean): Promise<IEntry> {
  const answer = await post<{ checkpoint: IEntry }>(pinned ? 'pin' : 'unpin', { store, ref });
  return answer.checkpoint;
}

/** `POST delete`: a named or pinned checkpoint needs `force` (409 `needs_force` without). */
export async function deleteCheckpoint(
  store: string,
  ref: string,
  force = false
): Promise<string> {
  const answer = await post<{ deleted: string }>('delete', { store, ref, force });
  return answer.deleted;
}

/** The full dashboard of `store`, served by the server behind the same authentication. */
export function dashboardUrl(store: string, settings?: ServerConnection.ISettings): string {
  const base = URLExt.join(settingsOrDefault(settings).baseUrl, 'ckpt-notebook', 'dashboard');
  return base + URLExt.objectToQueryString({ store });
}
