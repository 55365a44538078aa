// Decorates the app with the store (SQLite or PostgreSQL by DATABASE_URL), migrated at start, closed on close.
import fp from 'fastify-plugin';
import type { Config } from '../config';
import { createStore, openStore, storeOptions } from '../store/index';
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
    // Another key under an id the database knows is refused before the migrations and before anything is read or written.
    const store = await openStore(() => opts.store ?? createStore(storeOptions(opts.config)), owned, opts.config.encryption.keys);
    app.decorate('store', store);
    // A superuser could read files and run programs on the database server (COPY ... PROGRAM): the broker needs its own
    // database's ownership only. Said, not refused: moving an existing deployment to another role is a manual step.
    if (await store.connectedAsSuperuser?.().catch(() => false))
      app.log.warn('DATABASE_URL logs in as a PostgreSQL superuser: give the broker a role of its own that owns its database (docker-compose.yml does; deploy/postgres-init.sh)');
    const outage = new DatabaseOutage(() => store.ping(), {
      down: () => app.log.warn('the database is not answering: new sessions are refused (503 DATABASE_UNAVAILABLE) before Incode is called until it does'),
      up: (downMs) => app.log.info({ downMs }, 'the database answers again: new sessions are started again'),
    });
    app.decorate('databaseOutage', outage);
    // Read at scrape time, like the circuits: an alert on it sees the latch as starts do.
    if (app.hasDecorator('metrics')) app.metrics.sources.databaseDown = () => outage.down;
    app.addHook('onClose', async () => {
      outage.close();
      if (owned) await store.close();
    });
  },
  { name: 'store' },
);
