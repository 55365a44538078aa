// createStore picks the engine from the URL and never echoes a URL (it may hold credentials) in errors.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Cipher, createStore } from '../../src/store';
import { PostgresStore } from '../../src/store/postgres-store';
import { SqliteStore } from '../../src/store/sqlite-store';
import { describeWith, services } from '../helpers/services';
import { tempDir } from '../helpers/temp';

const cipher = new Cipher([{ id: 'k1', key: Buffer.alloc(32, 1) }]);

describe('createStore', () => {
  const dir = tempDir('store-factory-');

  it('opens a SQLite file, creating its parent folder', async () => {
    const file = join(dir, 'a', 'b', 'broker.db');
    const store = createStore({ url: `sqlite:${file}`, cipher });
    expect(store).toBeInstanceOf(SqliteStore);
    expect(store.engine).toBe('sqlite');
    await store.migrate();
    await store.ping();
    await store.close();
    expect(existsSync(file)).toBe(true);
  });

  it('accepts sqlite:// followed by a path', async () => {
    const rel = join(dir, 'rel.db');
    const s = createStore({ url: `sqlite://${rel}`, cipher });
    await s.migrate();
    await s.close();
    expect(existsSync(rel)).toBe(true);
  });

  it('opens in-memory SQLite', async () => {
    const store = createStore({ url: 'sqlite::memory:', cipher });
    await store.migrate();
    expect((await store.upsertSession({ interviewId: 'x', origin: 'broker', now: 1 })).interviewId).toBe('x');
    await store.close();
  });

  it('picks PostgreSQL for postgres:// and postgresql:// without connecting', async () => {
    for (const url of ['postgres://u:p@127.0.0.1:1/db', 'postgresql://u:p@127.0.0.1:1/db']) {
      const s = createStore({ url, cipher, pgPoolMax: 3, pgSchema: 'tenant_a' });
      expect(s).toBeInstanceOf(PostgresStore);
      expect(s.engine).toBe('postgres');
      expect((s as PostgresStore).schema).toBe('tenant_a');
      expect((s as PostgresStore).pool.options.max).toBe(3);
      // Nothing listens on port 1: a connection attempt would have opened a client (and failed).
      expect((s as PostgresStore).pool.totalCount).toBe(0);
      await s.close();
    }
  });

  it('rejects other schemes without echoing the URL', () => {
    const e = (() => {
      try {
        createStore({ url: 'mysql://user:hunter2@db/x', cipher });
      } catch (err) {
        return err as Error;
      }
      return null;
    })();
    expect(e?.message).toMatch(/unsupported store URL scheme: mysql/);
    expect(e?.message).not.toContain('hunter2');
    expect(() => createStore({ url: 'sqlite:', cipher })).toThrow(/path/);
  });
});

describeWith('postgres', 'createStore (postgres reachable)', () => {
  it('tells whether it logs in as a superuser (the test server\'s postgres does; a role of its own does not)', async () => {
    const role = `nosuper_${process.pid}_${Date.now().toString(36)}`;
    const admin = createStore({ url: services.postgres, cipher }) as PostgresStore;
    await admin.pool.query(`CREATE ROLE "${role}" LOGIN NOSUPERUSER`);
    const url = new URL(services.postgres);
    url.username = role;
    const own = createStore({ url: url.toString(), cipher }) as PostgresStore;
    try {
      expect(await admin.connectedAsSuperuser()).toBe(true);
      expect(await own.connectedAsSuperuser()).toBe(false);
    } finally {
      await own.close();
      await admin.pool.query(`DROP ROLE "${role}"`);
      await admin.close();
    }
  });


  it('migrates and pings a throwaway schema', async () => {
    const schema = `store_factory_${process.pid}_${Date.now().toString(36)}`;
    const s = createStore({ url: services.postgres, cipher, pgSchema: schema }) as PostgresStore;
    try {
      expect(s.engine).toBe('postgres');
      await s.migrate();
      await s.ping();
      const { rows } = await s.pool.query('SELECT table_name FROM information_schema.tables WHERE table_schema = $1', [schema]);
      expect(rows.map((r: { table_name: string }) => r.table_name)).toEqual(expect.arrayContaining(['sessions', 'jobs', 'results', 'schema_migrations']));
    } finally {
      await s.pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await s.close();
    }
  });
});
