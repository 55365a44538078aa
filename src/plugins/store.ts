// Decorates the app with the store (SQLite or PostgreSQL by DATABASE_URL), migrated at start, closed on close.
import fp from 'fastify-plugin';
import type { Config } from '../config';
import { createStore, storeOptions } from '../store/index';
import type { Store } from '../store/types';
import { DatabaseOutage } from '../store/outage';

declare module 'fastify' {
  interface FastifyInstance {
    store: Store;
    /** Whether the database is known to be down (a request found it so and no probe has had an answer since). */
    databaseOutage: DatabaseOutage;
  }
}

export default fp<{ config: Config; store?: Store }>(
  async (app, opts) => {
    const owned = !opts.store;
    const store = opts.store ?? createStore(storeOptions(opts.config));
    await store.migrate();
    app.decorate('store', store);
    const outage = new DatabaseOutage(() => store.ping());
    app.decorate('databaseOutage', outage);
    app.addHook('onClose', async () => {
      outage.close();
      if (owned) await store.close();
    });
  },
  { name: 'store' },
);
