// Decorates the app with the store (SQLite or PostgreSQL by DATABASE_URL), migrated at start, closed on close.
import fp from 'fastify-plugin';
import type { Config } from '../config';
import { Cipher } from '../store/crypto';
import { createStore } from '../store/index';
import type { Store } from '../store/types';

declare module 'fastify' {
  interface FastifyInstance {
    store: Store;
  }
}

export default fp<{ config: Config; store?: Store }>(
  async (app, opts) => {
    const owned = !opts.store;
    const store = opts.store ?? createStore({ url: opts.config.database.url, cipher: new Cipher(opts.config.encryption.keys), pgTimeoutMs: opts.config.database.timeoutMs, pgPoolMax: opts.config.database.poolMax, sqliteSynchronous: opts.config.database.sqliteSynchronous });
    await store.migrate();
    app.decorate('store', store);
    if (owned) app.addHook('onClose', async () => store.close());
  },
  { name: 'store' },
);
