// Decorates the app with the store (SQLite or PostgreSQL by DATABASE_URL), migrated at start, closed on close.
import fp from 'fastify-plugin';
import type { Config } from '../config';
import { createStore, storeOptions } from '../store/index';
import type { Store } from '../store/types';

declare module 'fastify' {
  interface FastifyInstance {
    store: Store;
  }
}

export default fp<{ config: Config; store?: Store }>(
  async (app, opts) => {
    const owned = !opts.store;
    const store = opts.store ?? createStore(storeOptions(opts.config));
    await store.migrate();
    app.decorate('store', store);
    if (owned) app.addHook('onClose', async () => store.close());
  },
  { name: 'store' },
);
