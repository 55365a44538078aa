// Store factory: picks SQLite or PostgreSQL from the URL; re-exports the contract and the crypto helpers.
import { ConfigError, type Config } from '../config';
import { Cipher, type CipherKey } from './crypto';
import { checkEncryptionKeys, recordEncryptionKeys, verifyEncryptionKeys } from './key-check';
import type { PostgresStore as PostgresStoreType } from './postgres-store';
import type { SqliteStore as SqliteStoreType } from './sqlite-store';
import type { Store } from './types';
import { parseStoreUrl } from './url';

export * from './types';
export { Cipher, CipherError, sha256Hex, type CipherKey } from './crypto';
export { MIGRATIONS, migratePostgres, migrateSqlite, type Migration } from './migrations';
export type { PostgresStoreOptions } from './postgres-store';
export type { SqliteStoreOptions } from './sqlite-store';

export interface CreateStoreOptions {
  /** `sqlite:./path/file.db`, `sqlite::memory:`, `postgres://…` or `postgresql://…`. */
  url: string;
  cipher: Cipher;
  pgPoolMax?: number;
  pgSchema?: string;
  /** PostgreSQL connect and statement bound in ms (DATABASE_TIMEOUT_MS); SQLite is in-process and ignores it. */
  pgTimeoutMs?: number;
  /** SQLite's synchronous pragma (SQLITE_SYNCHRONOUS); PostgreSQL ignores it. */
  sqliteSynchronous?: 'normal' | 'full';
}

/** The store the configuration names, with its settings: one place for the service and the CLI. */
export function storeOptions(config: Pick<Config, 'database' | 'encryption'>): CreateStoreOptions {
  const { url, schema, timeoutMs, poolMax, sqliteSynchronous } = config.database;
  return { url, cipher: new Cipher(config.encryption.keys), pgTimeoutMs: timeoutMs, pgPoolMax: poolMax, pgSchema: schema, sqliteSynchronous };
}

export function createStore(opts: CreateStoreOptions): Store {
  const { url, cipher } = opts;
  const target = parseStoreUrl(url);
  if (target?.engine === 'postgres') {
    // Engines load on demand: a SQLite deployment never pays pg's memory, and the other way round.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { PostgresStore } = require('./postgres-store') as { PostgresStore: typeof PostgresStoreType };
    return new PostgresStore({ url, cipher, poolMax: opts.pgPoolMax, schema: opts.pgSchema, timeoutMs: opts.pgTimeoutMs });
  }
  if (target?.engine === 'sqlite') {
    // The parent folder is created by SqliteStore.
    const { filename } = target;
    if (!filename) throw new Error('sqlite URL needs a path or :memory:');
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { SqliteStore } = require('./sqlite-store') as { SqliteStore: typeof SqliteStoreType };
    return new SqliteStore({ filename, cipher, synchronous: opts.sqliteSynchronous });
  }
  // Only the scheme is echoed: the rest of a URL may hold credentials.
  throw new Error(`unsupported store URL scheme: ${url.split(':')[0] || '(none)'}`);
}

/**
 * A store made and migrated, for the service and the CLI alike. Failing, it is closed again (when `owned`) and the
 * error names DATABASE_URL: "connect ECONNREFUSED" or "EACCES: mkdir" alone does not say which setting to look at.
 * The driver's words after it name a host, a port or a path, never the URL's password.
 */
export async function openStore(make: () => Store, owned = true, keys?: readonly CipherKey[]): Promise<Store> {
  let store: Store | undefined;
  try {
    store = make();
    // The keys are checked before the migrations too: a start refused for its key must leave the schema where it was,
    // or the release it was upgrading from could no longer open the database (it refuses a newer schema). Only a
    // refusal stops the start there: a read held up behind another replica's migration (its table locks) until the
    // statement timeout, or failing, is left to the migration, which waits for that replica, and to the check after it.
    // What that check passed is recorded after the migrations without being read again; only when it gave way is the
    // whole check made then.
    const checked = keys
      ? await checkEncryptionKeys(store, keys).catch((err: unknown) => {
          if (err instanceof ConfigError) throw err;
          return null;
        })
      : null;
    await store.migrate();
    if (checked) await recordEncryptionKeys(store, checked, Date.now());
    else if (keys) await verifyEncryptionKeys(store, keys, Date.now());
    return store;
  } catch (err) {
    if (owned) await store?.close().catch(() => undefined);
    // A setting to fix, named as such (the service exits 78 for it).
    if (err instanceof ConfigError) throw err;
    throw new Error(`the database of DATABASE_URL could not be opened or migrated: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}
