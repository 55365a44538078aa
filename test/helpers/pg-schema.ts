// Throwaway PostgreSQL schemas for tests: a store in a schema of its own, dropped afterwards.
import { Pool } from 'pg';
import { Cipher } from '../../src/store/crypto';
import { PostgresStore, type PostgresStoreOptions } from '../../src/store/postgres-store';
import { services } from './services';

/** A schema name no other test (or run) uses. */
export function schemaName(prefix: string): string {
  return `${prefix}_${process.pid}_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;
}

export async function dropSchema(schema: string): Promise<void> {
  const admin = new Pool({ connectionString: services.postgres, max: 1 });
  try {
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await admin.end();
  }
}

/** A PostgreSQL store (not yet migrated) in a throwaway schema; drop() closes it and removes the schema. */
export function throwawayPgStore(prefix: string, opts: Partial<PostgresStoreOptions> = {}) {
  const schema = opts.schema ?? schemaName(prefix);
  const store = new PostgresStore({ url: services.postgres, cipher: new Cipher([{ id: 'k1', key: Buffer.alloc(32, 7) }]), ...opts, schema });
  return {
    store,
    schema,
    drop: async () => {
      await store.close();
      await dropSchema(schema);
    },
  };
}
