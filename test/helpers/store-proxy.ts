// A store whose chosen methods a test replaces for a while (a database fault on one call), the rest passed through.
import type { Store } from '../../src/store/types';

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
