// What a DATABASE_URL names, read one way for the configuration's checks and for the store factory.

export type StoreTarget = { engine: 'postgres' } | { engine: 'sqlite'; filename: string };

/**
 * `postgres://` / `postgresql://` (any case), or `sqlite:path`, `sqlite://path`, `sqlite::memory:` (filename ''
 * when the path is missing); null for any other scheme.
 */
export function parseStoreUrl(url: string): StoreTarget | null {
  if (/^postgres(ql)?:\/\//i.test(url)) return { engine: 'postgres' };
  if (!url.startsWith('sqlite:')) return null;
  const filename = url.slice('sqlite:'.length);
  return { engine: 'sqlite', filename: filename.startsWith('//') ? filename.slice(2) : filename };
}

export const IN_MEMORY = ':memory:';
