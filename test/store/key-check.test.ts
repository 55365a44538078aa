// The start-up key check on both engines: another key under an id already used is refused, a rotation's new id is not.
import { join } from 'node:path';
import { Client } from 'pg';
import { ConfigError } from '../../src/config';
import { Cipher, type CipherKey } from '../../src/store/crypto';
import { keyFingerprint, verifyEncryptionKeys } from '../../src/store/key-check';
import { openStore } from '../../src/store/index';
import { MIGRATIONS, migratePostgres, migrateSqlite } from '../../src/store/migrations';
import type { PostgresStore } from '../../src/store/postgres-store';
import { SqliteStore } from '../../src/store/sqlite-store';
import type { Store } from '../../src/store/types';
import { dropSchema, throwawayPgStore } from '../helpers/pg-schema';
import { describeWith, services } from '../helpers/services';
import { storeWith } from '../helpers/store-proxy';
import { tempDir } from '../helpers/temp';

const A: CipherKey = { id: 'k1', key: Buffer.alloc(32, 1) };
const B: CipherKey = { id: 'k1', key: Buffer.alloc(32, 2) };
const C: CipherKey = { id: 'k2', key: Buffer.alloc(32, 3) };

/** The same database as an engine opens it: unmigrated, migrated only to the schema before the check, its version. */
interface Engine {
  make: (keys: CipherKey[]) => Store;
  migrateBeforeCheck: (store: Store) => Promise<void>;
  version: (store: Store) => Promise<number>;
}

const BEFORE_CHECK = MIGRATIONS.filter((m) => m.version < 12);

function keyCheckCases(engine: Engine) {
  /** A session stored under A by the release before the check (its schema, no fingerprints). */
  const writtenBeforeCheck = async (interviewId: string) => {
    const old = engine.make([A]);
    await engine.migrateBeforeCheck(old);
    await old.upsertSession({ interviewId, origin: 'broker', externalCustomerId: interviewId.replace('key-check', 'customer'), now: 1 });
    await old.close();
  };
  /** The same database under these keys, migrated; the case closes it. */
  const open = async (keys: CipherKey[]) => {
    const s = engine.make(keys);
    await s.migrate();
    return s;
  };
  const refused = async (keys: CipherKey[], why: RegExp) => {
    const store = await open(keys);
    try {
      const err = await verifyEncryptionKeys(store, keys, 2).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(/^Invalid configuration: DATA_ENCRYPTION_KEY lists key k1, but /);
      expect((err as Error).message).toMatch(why);
      // The message names ids, never key material.
      for (const k of keys) expect((err as Error).message).not.toContain(k.key.toString('base64'));
    } finally {
      await store.close();
    }
  };

  it('records each key at the first start and refuses another key under the same id afterwards', async () => {
    const first = await open([A]);
    await verifyEncryptionKeys(first, [A], 1);
    await first.upsertSession({ interviewId: 'key-check-1', origin: 'broker', externalCustomerId: 'customer-1', now: 1 });
    expect(await first.keyFingerprints()).toEqual(new Map([['k1', keyFingerprint(A.key)]]));
    await first.close();

    // The same key again: nothing changes.
    const again = await open([A]);
    await verifyEncryptionKeys(again, [A], 2);
    await again.close();

    await refused([B], /its fingerprint differs/);

    // A rotation: a new key under a new id first, the old one after it.
    const rotated = await open([C, A]);
    await verifyEncryptionKeys(rotated, [C, A], 3);
    expect([...(await rotated.keyFingerprints()).keys()].sort()).toEqual(['k1', 'k2']);
    expect((await rotated.getSession('key-check-1'))?.externalCustomerId).toBe('customer-1');
    await rotated.close();
    await refused([C, B], /its fingerprint differs/);
  });

  it('on a database written before the check, refuses a key that does not decrypt what is stored under its id', async () => {
    const old = await open([A]);
    await old.upsertSession({ interviewId: 'key-check-2', origin: 'broker', externalCustomerId: 'customer-2', now: 1 });
    await old.close();
    await refused([B], /a value stored under that id does not decrypt with it/);
    // Nothing was recorded for the wrong key: the right one is checked the same way, and kept.
    const right = await open([A]);
    expect((await right.keyFingerprints()).size).toBe(0);
    await verifyEncryptionKeys(right, [A], 3);
    expect(await right.keyFingerprints()).toEqual(new Map([['k1', keyFingerprint(A.key)]]));
    await right.close();
  });

  it('checks every key before recording any: a list refused for its second key records nothing, and a retry is refused again', async () => {
    const old = await open([A]);
    await old.upsertSession({ interviewId: 'key-check-3', origin: 'broker', externalCustomerId: 'customer-3', now: 1 });
    await old.close();
    // A rotation's list, its old key mistyped: k2 passes (nothing under it), k1 does not.
    await refused([C, B], /a value stored under that id does not decrypt with it/);
    const after = await open([A]);
    expect((await after.keyFingerprints()).size).toBe(0);
    await after.close();
    await refused([C, B], /a value stored under that id does not decrypt with it/);
    const right = await open([C, A]);
    await verifyEncryptionKeys(right, [C, A], 3);
    expect([...(await right.keyFingerprints()).keys()].sort()).toEqual(['k1', 'k2']);
    await right.close();
  });

  it('a start refused for its key leaves the schema where the release it upgrades from can still open it', async () => {
    await writtenBeforeCheck('key-check-4');
    const err = await openStore(() => engine.make([B]), true, [B]).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    const after = engine.make([A]);
    try {
      expect(await engine.version(after)).toBe(11);
      expect((await after.keyFingerprints()).size).toBe(0);
    } finally {
      await after.close();
    }
    // The right key migrates and records it.
    const upgraded = await openStore(() => engine.make([A]), true, [A]);
    try {
      expect(await engine.version(upgraded)).toBe(MIGRATIONS.at(-1)!.version);
      expect([...(await upgraded.keyFingerprints()).keys()]).toEqual(['k1']);
      expect((await upgraded.getSession('key-check-4'))?.externalCustomerId).toBe('customer-4');
    } finally {
      await upgraded.close();
    }
  });

  it('a start reads what is stored under each unrecorded key once, before the migrations, and records it after them', async () => {
    await writtenBeforeCheck('key-check-5');
    const sampled: string[] = [];
    const store = await openStore(
      () => {
        const real = engine.make([C, A]);
        return storeWith(real, (method) =>
          method === 'sampleCiphertexts'
            ? async (...args: never[]) => {
                sampled.push(String(args[0]));
                return real.sampleCiphertexts(args[0]);
              }
            : null,
        );
      },
      true,
      [C, A],
    );
    try {
      expect(sampled).toEqual(['k2', 'k1']);
      expect([...(await store.keyFingerprints()).keys()].sort()).toEqual(['k1', 'k2']);
    } finally {
      await store.close();
    }
  });

  it('keeps the first fingerprint recorded for an id when two replicas record theirs at once', async () => {
    const store = await open([A]);
    try {
      expect(await store.recordKeyFingerprint('k9', 'first', 1)).toBe('first');
      expect(await store.recordKeyFingerprint('k9', 'second', 2)).toBe('first');
    } finally {
      await store.close();
    }
  });
}

describe('verifyEncryptionKeys on SQLite', () => {
  const dir = tempDir('key-check-');
  let n = 0;
  let file = '';
  beforeEach(() => {
    file = join(dir, `db-${n++}.sqlite`);
  });
  keyCheckCases({
    make: (keys) => new SqliteStore({ filename: file, cipher: new Cipher(keys) }),
    migrateBeforeCheck: async (s) => void migrateSqlite((s as SqliteStore).db, BEFORE_CHECK),
    version: async (s) => ((s as SqliteStore).db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number }).v,
  });
});

describeWith('postgres', 'verifyEncryptionKeys on PostgreSQL', () => {
  let schema = '';
  const schemas = new Set<string>();
  beforeEach(() => {
    schema = `key_check_${process.pid}_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;
    schemas.add(schema);
  });
  afterAll(async () => {
    for (const s of schemas) await dropSchema(s);
  });
  // The cases close each store they open; the schema stays for the next open until afterAll.
  keyCheckCases({
    make: (keys) => throwawayPgStore('key_check', { schema, cipher: new Cipher(keys) }).store,
    migrateBeforeCheck: async (s) => void (await migratePostgres((s as PostgresStore).pool, schema, BEFORE_CHECK)),
    version: async (s) => Number((await (s as PostgresStore).pool.query(`SELECT MAX(version) AS v FROM "${schema}".schema_migrations`)).rows[0].v),
  });

  it("answers the fingerprint another replica committed while this one's insert waited on it", async () => {
    const { store } = throwawayPgStore('key_check', { schema, cipher: new Cipher([A]) });
    await store.migrate();
    const other = new Client({ connectionString: services.postgres });
    await other.connect();
    try {
      await other.query('BEGIN');
      await other.query(`INSERT INTO "${schema}".encryption_keys (key_id, fingerprint, created_at) VALUES ('k7', 'theirs', 1)`);
      const mine = store.recordKeyFingerprint('k7', 'mine', 2);
      // Its insert is waiting on the uncommitted row: commit that, as a replica starting beside this one would.
      await new Promise((r) => setTimeout(r, 300));
      await other.query('COMMIT');
      expect(await mine).toBe('theirs');
    } finally {
      await other.end();
      await store.close();
    }
  });
});
