// A store whose chosen methods a test replaces for a while (a database fault on one call), the rest passed through;
// and an in-memory one to wrap.
import { Cipher } from '../../src/store/crypto';
import { SqliteStore } from '../../src/store/sqlite-store';
import type { Store } from '../../src/store/types';
import { ENCRYPTION_KEY } from './harness';

/** `real`, with each method for which `override` answers a function replaced by it (null passes the call through). */
export function storeWith(real: Store, override: (method: string) => ((...args: never[]) => Promise<unknown>) | null): Store {
  return new Proxy(real, {
    get: (target, key) => {
      const replaced = typeof key === 'string' ? override(key) : null;
      if (replaced) return replaced;
      const v = Reflect.get(target, key) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** A migrated in-memory SQLite store under the test brokers' DATA_ENCRYPTION_KEY; the caller closes it. */
export async function memoryStore(): Promise<SqliteStore> {
  const [id, key] = ENCRYPTION_KEY.split(':');
  const store = new SqliteStore({ filename: ':memory:', cipher: new Cipher([{ id, key: Buffer.from(key, 'base64') }]) });
  await store.migrate();
  return store;
}
