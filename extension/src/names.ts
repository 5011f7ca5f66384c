/**
 * The checkpoint naming rule, as `ckpt copy` checks it (ckpt_notebook/types.py
 * `is_valid_name`): 1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.', and not a
 * REF keyword (latest, last, best.<metric>). The server checks again; this is for the dialog.
 */
const NAME_RE = /^[A-Za-z0-9_.-]{1,128}$/;

/** The rule in words, as the CLI says it. */
export const NAME_RULE =
  "1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.', and not a REF keyword " +
  '(latest, last, best.<metric>)';

/** Why `name` is not a valid checkpoint name, or null when it is. */
export function nameProblem(name: string): string | null {
  if (name.length === 0) {
    return 'a name is needed';
  }
  if (name.length > 128) {
    return `${name.length} characters: at most 128`;
  }
  const bad = [...new Set(name.replace(/[A-Za-z0-9_.-]/g, ''))];
  if (bad.length > 0) {
    const shown = bad.map(c => (c === ' ' ? 'space' : `'${c}'`)).join(', ');
    return `not allowed: ${shown} (only A-Z a-z 0-9 . _ -)`;
  }
  if (name.startsWith('.')) {
    return "a name cannot start with '.'";
  }
  if (name === 'latest' || name === 'last' || name.startsWith('best.')) {
    return `'${name}' is a REF keyword (latest, last, best.<metric>)`;
  }
  return NAME_RE.test(name) ? null : `names are ${NAME_RULE}`;
}

/** A valid name suggested for a copy of `path` (its last part, cleaned). */
export function suggestName(path: string): string {
  const base = path.split('/').filter(Boolean).pop() ?? '';
  const cleaned = base
    .replace(/\.[A-Za-z0-9]+$/, '')
    .replace(/[^A-Za-z0-9_.-]+/g, '-')
    .replace(/^[.-]+/, '')
    .slice(0, 128);
  return nameProblem(cleaned) === null ? cleaned : '';
}
