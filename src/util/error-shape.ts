// What a log line may say of an unexpected error: its kind, its code and where it was thrown, never its message.

/**
 * An error as a log field without its message, which can quote the data it failed on (Node's JSON.parse quotes its
 * input, a driver the value it refused, a parser the OCR it read). The stack's frames are code locations: kept, so a
 * defect can still be found from its line.
 */
export function errorShape(err: unknown): { type: string; code?: string; at?: string[] } {
  const { name, code, stack } = (err ?? {}) as { name?: unknown; code?: unknown; stack?: unknown };
  // The stack begins with the error's own text ("Name: message"), whose lines could look like frames: cut off first.
  const head = err instanceof Error ? String(err) : '';
  const frames = typeof stack === 'string' ? (head && stack.startsWith(head) ? stack.slice(head.length) : '') : '';
  const at = frames.split('\n').filter((l) => /^\s+at /.test(l)).slice(0, 8).map((l) => l.trim());
  return {
    type: typeof name === 'string' ? name : typeof err,
    ...(typeof code === 'string' ? { code } : {}),
    ...(at.length ? { at } : {}),
  };
}
