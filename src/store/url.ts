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

/**
 * A PostgreSQL schema name this service takes (DATABASE_SCHEMA): lowercase letters, digits and _, as an identifier,
 * and none PostgreSQL keeps for itself (it refuses to create a `pg_` schema; its catalogs are no place for tables).
 */
export const isSchemaName = (name: string): boolean =>
  /^[a-z_][a-z0-9_]{0,62}$/.test(name) && !name.startsWith('pg_') && name !== 'information_schema';

/**
 * A PostgreSQL URL without its `options` parameter, and that parameter's value: node-postgres lets the URL's options
 * replace the store's own (its `-c search_path=`), so the store puts them back in front of its own instead, where a
 * later `-c` of the same setting wins. A URL without options is returned as given.
 */
export function splitPgOptions(url: string): { url: string; options: string | undefined } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { url, options: undefined };
  }
  const options = u.searchParams.get('options');
  if (options === null) return { url, options: undefined };
  u.searchParams.delete('options');
  return { url: u.toString(), options };
}
