// Runs the store contract on PostgreSQL, each test in a throwaway schema, plus PostgreSQL-only checks (concurrent migrate, pools racing).
import { Pool, type PoolClient } from 'pg';
import { Cipher, sha256Hex } from '../../src/store/crypto';
import { MIGRATIONS, migratePostgres } from '../../src/store/migrations';
import { isDatabaseUnavailable } from '../../src/store/unavailable';
import { openStore } from '../../src/store/index';
import { PostgresStore } from '../../src/store/postgres-store';
import type { Store } from '../../src/store/types';
import { describeWith, services } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { aad } from '../../src/store/rows';
import { REKEY_START } from '../../src/store/rekey';
import { K1, K2, runStoreContract } from './store-contract';

const RUN = `store_test_${process.pid}_${Date.now().toString(36)}`;
let seq = 0;
const schemas = new Set<string>();
let admin: Pool | undefined;

function adminPool(): Pool {
  admin ??= new Pool({ connectionString: services.postgres, max: 2 });
  return admin;
}

function newSchema(): string {
  const s = `${RUN}_${++seq}`;
  schemas.add(s);
  return s;
}

async function dropSchema(s: string): Promise<void> {
  await adminPool().query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
  schemas.delete(s);
}

const open = (schema: string, cipher: Cipher, poolMax = 4) => new PostgresStore({ url: services.postgres, cipher, schema, poolMax });

describeWith('postgres', 'PostgresStore', () => {
  afterAll(async () => {
    for (const s of [...schemas]) await dropSchema(s);
    await admin?.end();
  });

  runStoreContract('postgres', async (cipher) => {
    const schema = newSchema();
    const store = open(schema, cipher);
    return {
      store,
      open: async (c: Cipher) => {
        const s = open(schema, c);
        await s.migrate();
        return s;
      },
      async exec(sql, params = []) {
        let i = 0;
        const { rows } = await store.pool.query(
          sql.replace(/\?/g, () => `$${++i}`),
          params,
        );
        return rows;
      },
      // Every column of every table, as the server would hand it to anyone with read access or a dump.
      async dump() {
        const { rows: tables } = await store.pool.query<{ table_name: string }>(
          'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name',
          [schema],
        );
        let out = '';
        for (const t of tables) {
          const { rows } = await store.pool.query<{ r: string }>(`SELECT t::text AS r FROM "${schema}"."${t.table_name}" t`);
          out += rows.map((r) => r.r).join('\n') + '\n';
        }
        return out;
      },
      async cleanup() {
        await store.close();
        await dropSchema(schema);
      },
    };
  });

  describe('PostgreSQL specifics', () => {
    const stores: Store[] = [];
    afterEach(async () => {
      for (const s of stores.splice(0)) await s.close();
    });
    const track = (s: PostgresStore) => (stores.push(s), s);

    it('a connection the server ends between two statements of a transaction fails that transaction as unavailable, never the process', async () => {
      const s = track(open(newSchema(), new Cipher([K1]), 1));
      await s.migrate();
      const tx = (s as unknown as { tx<T>(fn: (c: PoolClient) => Promise<T>): Promise<T> }).tx.bind(s);
      const failed = await tx(async (c) => {
        const { rows } = await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        // Idle in its transaction when the server ends it (a restart, pg_terminate_backend): the client hears it
        // between statements, with no query of its own to fail.
        await adminPool().query('SELECT pg_terminate_backend($1)', [rows[0].pid]);
        await waitFor(() => (c as unknown as { _queryable: boolean })._queryable === false);
        await c.query('SELECT 1');
      }).then(
        () => null,
        (err: unknown) => err,
      );
      expect(isDatabaseUnavailable(failed)).toBe(true);
      // The dead client was not handed back to the pool (of one): the next statement gets a new connection.
      expect(await s.getSession('nobody')).toBeNull();
      // Likewise a migration's client.
      const pool = new Pool({ connectionString: services.postgres, max: 1 });
      try {
        const c = await pool.connect();
        const { rows } = await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        c.release();
        const schema = newSchema();
        const slow = [{ version: 1, name: 'terminated', sqlite: '', postgres: `SELECT pg_terminate_backend(${rows[0].pid}) FROM pg_sleep(0)` }, { version: 2, name: 'after', sqlite: '', postgres: 'SELECT 1' }];
        expect(isDatabaseUnavailable(await migratePostgres(pool, schema, slow).then(() => null, (err: unknown) => err))).toBe(true);
        expect((await pool.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      } finally {
        await pool.end();
      }
    });

    it("queues no job behind one with its dedupe key whose `done` another replica commits while the insert waits on it", async () => {
      const schema = newSchema();
      const s = track(open(schema, new Cipher([K1])));
      await s.migrate();
      const key = 'results:race1:ONBOARDING_FINISHED';
      expect(await s.enqueueJob({ kind: 'results', subject: 'race1', runAt: 1000, dedupeKey: key }, 1000)).toBe(true);
      const [running] = await s.claimJobs('other-replica', 1, 60_000, 1000);
      const other = await adminPool().connect();
      try {
        await other.query('BEGIN');
        await other.query(`UPDATE "${schema}".jobs SET state = 'done', updated_at = 2000 WHERE id = $1`, [running.id]);
        // The check began at 1500, before that job finished: its insert waits on the dedupe key the job still holds.
        const queued = s.enqueueJob({ kind: 'results', subject: 'race1', runAt: 1500, dedupeKey: key, unlessDoneSince: 1500 }, 1500);
        await waitFor(async () => (await adminPool().query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO jobs%'`)).rowCount, 10_000);
        await other.query('COMMIT');
        expect(await queued).toBe(false);
      } finally {
        other.release();
      }
      expect((await s.listJobs('race1')).map((j) => j.state)).toEqual(['done']);
    });

    it("opens with its keys while another replica's migration holds the tables: a key check held up before migrating gives way to the migration's own wait", async () => {
      const schema = newSchema();
      const before = new PostgresStore({ url: services.postgres, cipher: new Cipher([K1]), schema });
      await migratePostgres(before.pool, schema, MIGRATIONS.filter((m) => m.version < 10));
      await before.close();
      // The other replica, mid-migration: its advisory lock and a table lock its next step took.
      const other = await adminPool().connect();
      try {
        await other.query('BEGIN');
        await other.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`incode-broker:migrations:${schema}`]);
        await other.query(`LOCK TABLE "${schema}".sessions IN ACCESS EXCLUSIVE MODE`);
        const opened = openStore(() => new PostgresStore({ url: services.postgres, cipher: new Cipher([K1]), schema, timeoutMs: 1000 }), true, [K1]);
        // Longer than the statement timeout, which bounded the key check's read before the migration.
        await new Promise((r) => setTimeout(r, 2500));
        await other.query('COMMIT');
        const s = track((await opened) as PostgresStore);
        expect([...(await s.keyFingerprints()).keys()]).toEqual(['k1']);
        const { rows } = await adminPool().query(`SELECT MAX(version) AS v FROM "${schema}".schema_migrations`);
        expect(Number(rows[0].v)).toBe(MIGRATIONS.at(-1)!.version);
      } finally {
        other.release();
      }
    });

    it('keeps its tables in its own schema', async () => {
      const schema = newSchema();
      const s = track(open(schema, new Cipher([K1])));
      await s.migrate();
      const { rows } = await adminPool().query<{ table_name: string }>(
        'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name',
        [schema],
      );
      expect(rows.map((r) => r.table_name)).toEqual([
        'audit',
        'encryption_keys',
        'events',
        'idempotency_keys',
        'jobs',
        'results',
        'schema_migrations',
        'sessions',
        'steps',
      ]);
    });

    it('a re-encryption waits for a row another transaction is changing, then leaves the value written there', async () => {
      const schema = newSchema();
      const k1 = new Cipher([K1]);
      const s = track(open(schema, k1));
      await s.migrate();
      await s.upsertSession({ interviewId: 'c', origin: 'broker', token: 'tok-c', now: 1 });
      const rotated = track(open(schema, new Cipher([K2, K1])));
      const pool = adminPool();
      const other = await pool.connect();
      try {
        await other.query('BEGIN');
        const newer = k1.encrypt('tok-c2', aad.token('c'));
        await other.query(`UPDATE "${schema}".sessions SET token_enc = $1 WHERE interview_id = 'c'`, [newer]);
        // The batch reads the committed value, then its update waits for the row lock this transaction holds.
        const batch = rotated.reencryptBatch(REKEY_START, 10);
        await waitFor(async () => (await pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE sessions AS t SET token_enc%'`)).rows[0].n === 1);
        await other.query('COMMIT');
        expect(await batch).toMatchObject({ found: 1, reencrypted: 0, unreadable: 0 });
        expect((await rotated.getSession('c'))?.token).toBe('tok-c2');
        expect(await rotated.reencryptBatch(REKEY_START, 10)).toMatchObject({ found: 1, reencrypted: 1 });
      } finally {
        // Never back in the pool inside a transaction holding the row (the schema's DROP would wait on it).
        await other.query('ROLLBACK').catch(() => undefined);
        other.release();
      }
    });

    it('refuses a database a newer release migrated, naming both versions', async () => {
      const schema = newSchema();
      const pool = adminPool();
      await migratePostgres(pool, schema);
      const older = MIGRATIONS.slice(0, -1);
      await expect(migratePostgres(pool, schema, older)).rejects.toThrow(new RegExp(`schema is version ${MIGRATIONS.at(-1)!.version}, newer than this build's ${older.at(-1)!.version}`));
      // The full list, the database's own: nothing to refuse, nothing to apply.
      expect(await migratePostgres(pool, schema)).toEqual([]);
    });

    it("keeps its schema with a DATABASE_URL that has options of its own, and keeps those options too", async () => {
      const schema = newSchema();
      const url = new URL(services.postgres);
      url.searchParams.set('options', '-c work_mem=7MB');
      const s = track(new PostgresStore({ url: url.toString(), cipher: new Cipher([K1]), schema, poolMax: 2 }));
      await s.migrate();
      await s.upsertSession({ interviewId: 'opt1', origin: 'broker', token: 't', now: 1 });
      expect((await s.getSession('opt1'))?.interviewId).toBe('opt1');
      const { rows } = await s.pool.query('SELECT current_schema() AS schema, current_setting(\'work_mem\') AS mem');
      expect(rows[0]).toEqual({ schema, mem: '7MB' });
    });

    it('concurrent migrate() from several replicas applies each migration once', async () => {
      const schema = newSchema();
      const replicas = [1, 2, 3, 4].map(() => track(open(schema, new Cipher([K1]), 2)));
      await Promise.all(replicas.map((r) => r.migrate()));
      await replicas[0].migrate();
      const { rows } = await adminPool().query(`SELECT version FROM "${schema}".schema_migrations`);
      expect(rows).toEqual(MIGRATIONS.map((m) => ({ version: m.version })));
    });

    it('upgrades both shapes version 1 shipped in (resume tokens in their own table, or on sessions with an index), from version 1 or 2', async () => {
      for (const [firstShape, reached] of [[true, 1], [true, 2], [false, 1]] as const) {
        const schema = newSchema();
        const pool = adminPool();
        await migratePostgres(pool, schema, MIGRATIONS.slice(0, 1));
        await pool.query(`INSERT INTO "${schema}".sessions (interview_id, origin, token_hash, onboarding_status, created_at, updated_at) VALUES ('i1', 'broker', $1, 'UNKNOWN', 1, 1)`, [
          sha256Hex('t1'),
        ]);
        if (firstShape)
          await pool.query(`
            DROP INDEX "${schema}".sessions_resume_token_hash;
            ALTER TABLE "${schema}".sessions DROP COLUMN resume_token_hash, DROP COLUMN resume_expires_at;
            CREATE TABLE "${schema}".resume_tokens (token_hash TEXT PRIMARY KEY, interview_id TEXT NOT NULL, expires_at BIGINT NOT NULL, created_at BIGINT NOT NULL);
          `);
        // Version 2 as it shipped assumed the later shape: a first-shape database that ran it still lacks the columns.
        if (reached === 2) await migratePostgres(pool, schema, MIGRATIONS.slice(0, 2));
        const s = track(open(schema, new Cipher([K1])));
        await s.migrate();
        const { rows } = await pool.query(
          `SELECT (SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'resume_tokens')::int AS tables,
                  (SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'sessions_resume_token_hash')::int AS indexes`,
          [schema],
        );
        expect(rows).toEqual([{ tables: 0, indexes: 0 }]);
        // Migration 3: the old row keeps its entry in the (now partial) token-hash index.
        expect((await s.getSessionByToken('t1'))?.interviewId).toBe('i1');
        await s.createResumeToken('rh', 'i1', 2e12);
        expect(await s.checkResumeToken('i1', 'rh', 2)).toBe(true);
      }
    });

    it('schema versions 7 and 9 clear what sessions erased before them kept (decision, steps, inbox, job payloads, a verdict status), and leave the others', async () => {
      const schema = newSchema();
      const pool = adminPool();
      await migratePostgres(pool, schema, MIGRATIONS.filter((m) => m.version < 7));
      const q = (sql: string, args: unknown[] = []) => pool.query(sql.replace(/"S"/g, `"${schema}"`), args);
      for (const [id, results, status] of [['erased1', 'erased', 'MANUAL_REVIEW_REJECTED'], ['kept1', 'ready', 'MANUAL_REVIEW_APPROVED']]) {
        await q(
          `INSERT INTO "S".sessions (interview_id, origin, onboarding_status, status_rank, results_status, decision, last_error, created_at, updated_at) VALUES ($1, 'broker', $2, 3, $3, 'decline', 'X', 1, 1)`,
          [id, status, results],
        );
        await q(`INSERT INTO "S".steps (interview_id, step, outcome, code, at) VALUES ($1, 'results', 'ok', 'decline', 1)`, [id]);
        await q(`INSERT INTO "S".events (key, interview_id, onboarding_status, payload, received_at) VALUES ($1, $2, 'MANUAL_REVIEW_REJECTED', '{}', 1)`, [`${id}:MANUAL_REVIEW_REJECTED`, id]);
        await q(
          `INSERT INTO "S".jobs (id, kind, subject, payload, state, attempts, run_at, dedupe_key, created_at, updated_at) VALUES ($1, 'verify', $2, '{"claimed":"MANUAL_REVIEW_REJECTED"}', 'done', 1, 1, $3, 1, 1)`,
          [`job-${id}`, id, `verify:${id}`],
        );
      }
      const s = track(open(schema, new Cipher([K1])));
      await s.migrate();
      expect(await s.getSession('erased1')).toMatchObject({ onboardingStatus: 'MANUAL_REVIEW_VERDICT', statusRank: 3, decision: null, lastError: null });
      expect(await s.listSteps('erased1')).toEqual([]);
      expect(await s.hasEvent('erased1:MANUAL_REVIEW_REJECTED')).toBe(false);
      expect((await s.listJobs('erased1'))[0]).toMatchObject({ payload: {} });
      expect(await s.getSession('kept1')).toMatchObject({ onboardingStatus: 'MANUAL_REVIEW_APPROVED', decision: 'decline', lastError: 'X' });
      expect(await s.listSteps('kept1')).toHaveLength(1);
      expect(await s.hasEvent('kept1:MANUAL_REVIEW_REJECTED')).toBe(true);
      expect((await s.listJobs('kept1'))[0]).toMatchObject({ payload: { claimed: 'MANUAL_REVIEW_REJECTED' } });
    });

    it('a migration waiting for a table lock gives way at its lock timeout and asks again, and says so when the lock never comes', async () => {
      const schema = newSchema();
      const pool = new Pool({ connectionString: services.postgres, max: 3 });
      const holder = await pool.connect();
      try {
        await migratePostgres(pool, schema);
        // An older replica's transaction reading the table a migration must alter.
        await holder.query('BEGIN');
        await holder.query(`LOCK TABLE "${schema}".sessions IN ACCESS SHARE MODE`);
        const alter = [{ version: 1000, name: 'alters-sessions', sqlite: '', postgres: 'ALTER TABLE sessions ADD COLUMN lock_probe INTEGER' }];
        await expect(migratePostgres(pool, schema, alter, { lockTimeoutMs: 100, attempts: 3 })).rejects.toThrow(/schema migration 1000 \(alters-sessions\) could not take its table locks in 3 tries/);
        // Asked again until the holder is done: then it applies.
        const migrating = migratePostgres(pool, schema, alter, { lockTimeoutMs: 100, attempts: 100 });
        await new Promise((r) => setTimeout(r, 300));
        await holder.query('COMMIT');
        expect(await migrating).toEqual([1000]);
      } finally {
        await holder.query('ROLLBACK').catch(() => undefined);
        holder.release();
        await pool.end();
      }
    });

    it('several pools claiming at once never share a job', async () => {
      const schema = newSchema();
      const a = track(open(schema, new Cipher([K1]), 5));
      const b = track(open(schema, new Cipher([K1]), 5));
      await a.migrate();
      await b.migrate();
      const n = 200;
      await Promise.all(Array.from({ length: n }, (_, i) => a.enqueueJob({ kind: 'k', subject: `j${i}`, runAt: 0 }, 0)));
      const got: string[] = [];
      const worker = async (s: Store, owner: string) => {
        for (;;) {
          const jobs = await s.claimJobs(owner, 4, 60_000, 1);
          if (!jobs.length) return;
          got.push(...jobs.map((j) => j.id));
        }
      };
      await Promise.all([a, b, a, b, a, b, a, b].map((s, i) => worker(s, `w${i}`)));
      expect(got).toHaveLength(n);
      expect(new Set(got).size).toBe(n);
      expect(await a.countJobs()).toEqual({ queued: 0, running: n, done: 0, dead: 0 });
    });

    it('purges retention in batches, each its own transaction, until the backlog is done', async () => {
      const s = track(new PostgresStore({ url: services.postgres, cipher: new Cipher([K1]), schema: newSchema(), poolMax: 2, purgeBatch: 2 }));
      await s.migrate();
      for (let i = 0; i < 5; i++) await s.upsertSession({ interviewId: `old${i}`, origin: 'broker', token: `tok-${i}`, now: 1000 + i });
      await s.upsertSession({ interviewId: 'new', origin: 'broker', token: 'tok-new', now: 9000 });
      const commits: number[] = [];
      const pool = s.pool as unknown as { connect: () => Promise<PoolClient> };
      const original = pool.connect;
      const connect = pool.connect.bind(s.pool);
      // Pooled clients come back: each is wrapped once, so each COMMIT is counted once.
      const wrapped = new WeakSet<PoolClient>();
      pool.connect = (async (...cb: unknown[]) => {
        // pool.query() connects with a callback: left to the pool (a single statement has no COMMIT to count).
        if (cb.length) return (original as (...a: unknown[]) => unknown).apply(s.pool, cb);
        const c = await connect();
        if (wrapped.has(c)) return c;
        wrapped.add(c);
        const query = c.query;
        c.query = ((...args: unknown[]) => {
          if (args[0] === 'COMMIT') commits.push(Date.now());
          return (query as (...a: unknown[]) => unknown).apply(c, args);
        }) as typeof c.query;
        return c;
      }) as typeof pool.connect;
      expect(await s.purgeExpired(5000, 10_000)).toBe(5);
      // Back to the pool's own connect (its query() passes a callback this wrapper does not take).
      pool.connect = original;
      // Three batches (2, 2, 1), each its own transaction (the housekeeping deletes are single statements).
      expect(commits).toHaveLength(3);
      for (let i = 0; i < 5; i++) expect(await s.getSession(`old${i}`)).toMatchObject({ resultsStatus: 'erased', token: null });
      expect(await s.getSession('new')).toMatchObject({ resultsStatus: 'pending', token: 'tok-new' });
      expect((await s.listAudit()).filter((a) => a.kind === 'retention-purge')).toHaveLength(5);
    });

    it('two replicas purging at once erase and audit each session once', async () => {
      const schema = newSchema();
      const a = track(new PostgresStore({ url: services.postgres, cipher: new Cipher([K1]), schema, poolMax: 2, purgeBatch: 5 }));
      const b = track(new PostgresStore({ url: services.postgres, cipher: new Cipher([K1]), schema, poolMax: 2, purgeBatch: 5 }));
      await a.migrate();
      for (let round = 0; round < 3; round++) {
        const ids = Array.from({ length: 60 }, (_, i) => `r${round}-${String(i).padStart(3, '0')}`);
        for (const id of ids) await a.upsertSession({ interviewId: id, origin: 'broker', token: `tok-${id}`, now: 1000 });
        const [na, nb] = await Promise.all([a.purgeExpired(5000, 10_000 + round), b.purgeExpired(5000, 10_000 + round)]);
        // Each sweep may stop early on a short batch (the other took the rows); a third sweep finishes what is left.
        const nc = await a.purgeExpired(5000, 10_000 + round);
        expect(na + nb + nc).toBe(ids.length);
        const audits = (await a.listAudit()).filter((x) => x.kind === 'retention-purge' && x.at === 10_000 + round);
        expect(audits.map((x) => x.subject).sort()).toEqual(ids);
      }
    });

    it('an Idempotency-Key claimed and released by others each time it is read answers pending, never throws', async () => {
      const s = track(open(newSchema(), new Cipher([K1])));
      await s.migrate();
      // Another claimant takes the key before each upsert and releases it before each read: the worst interleaving.
      const query = s.pool.query.bind(s.pool) as (sql: string, args?: unknown[]) => Promise<unknown>;
      let reads = 0;
      const spy = jest.spyOn(s.pool, 'query').mockImplementation((async (sql: string, args?: unknown[]) => {
        if (/^INSERT INTO idempotency_keys/.test(sql))
          await query(`INSERT INTO idempotency_keys (scope, key, request_hash, state, expires_at, created_at) VALUES ('session:a', 'k', 'other', 'pending', 9e12, 1)`);
        if (/^SELECT request_hash/.test(sql)) {
          reads += 1;
          await query(`DELETE FROM idempotency_keys WHERE scope = 'session:a' AND key = 'k'`);
        }
        return query(sql, args);
      }) as never);
      try {
        expect(await s.claimIdempotencyKey('session:a', 'k', 'mine', 2e12, 1e12)).toEqual({ state: 'pending', requestHash: 'mine' });
        expect(reads).toBe(5);
      } finally {
        spy.mockRestore();
      }
    });

    it('returns epoch-ms bigints as numbers', async () => {
      const s = track(open(newSchema(), new Cipher([K1])));
      await s.migrate();
      const big = 4_102_444_800_000; // year 2100
      const r = await s.upsertSession({ interviewId: 'x', origin: 'broker', nextPollAt: big, now: big });
      expect(r.createdAt).toBe(big);
      expect(typeof r.nextPollAt).toBe('number');
    });

    it('an erasure (or retention purge) racing a results save removes the results that save commits', async () => {
      const OCR = { fullName: 'Zephyrine Quillfeather-Obradovic' };
      for (const how of ['erase', 'purge'] as const) {
        const s = track(open(newSchema(), new Cipher([K1])));
        await s.migrate();
        await s.upsertSession({ interviewId: 'i1', origin: 'broker', token: 'tok-i1', now: 1000 });
        // The next transaction (saveResults's) is held just before its COMMIT, its session row still locked.
        let release!: () => void;
        const gate = new Promise<void>((r) => (release = r));
        let saverPid: number | undefined;
        const pool = s.pool as unknown as { connect: () => Promise<PoolClient> };
        const connect = pool.connect;
        pool.connect = async () => {
          pool.connect = connect;
          const c = await connect.call(s.pool);
          const query = c.query;
          c.query = (async (...args: unknown[]) => {
            if (args[0] === 'COMMIT') {
              c.query = query;
              saverPid = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
              await gate;
            }
            return (query as (...a: unknown[]) => unknown).apply(c, args);
          }) as typeof c.query;
          return c;
        };
        const save = s.saveResults('i1', { scores: { overall: 'OK' }, ocr: OCR, fetchedAt: 2000 }, 'approve', 2000);
        await waitFor(() => saverPid, 5000, 10);
        const erased = how === 'erase' ? s.eraseSession('i1', 'test', 3000) : s.purgeExpired(5000, 3000);
        // The erasure is waiting for the saver's row lock before the save commits.
        await waitFor(async () => {
          const { rows } = await adminPool().query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [saverPid]);
          return rows[0].n > 0;
        }, 5000, 10);
        release();
        await save;
        expect(await erased).toEqual(how === 'erase' ? true : 1);
        expect(await s.getSession('i1')).toMatchObject({ resultsStatus: 'erased' });
        expect(await s.getResults('i1')).toBeNull();
        // And a later save still stores nothing.
        await s.saveResults('i1', { scores: { overall: 'OK' }, ocr: OCR, fetchedAt: 4000 }, 'approve', 4000);
        expect(await s.getResults('i1')).toBeNull();
      }
    });

    it('a step or a status move racing an erasure waits for it and then writes nothing; a webhook recorded beside it is swept by erasing again', async () => {
      const s = track(open(newSchema(), new Cipher([K1])));
      await s.migrate();
      await s.upsertSession({ interviewId: 'i1', origin: 'broker', token: 'tok-i1', now: 1000 });
      await s.advanceStatus('i1', 'ONBOARDING_FINISHED', 2, false, 1000);
      // An erasure in progress, as eraseSession runs it: the row locked FOR UPDATE, then its statement, not yet committed.
      const eraser = await s.pool.connect();
      try {
        const eraserPid = (await eraser.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
        await eraser.query('BEGIN');
        await eraser.query("SELECT 1 FROM sessions WHERE interview_id = 'i1' FOR UPDATE");
        await eraser.query("UPDATE sessions SET results_status = 'erased' WHERE interview_id = 'i1'");
        await eraser.query("DELETE FROM events WHERE interview_id = 'i1'");
        await eraser.query("DELETE FROM steps WHERE interview_id = 'i1'");
        const key = 'i1:MANUAL_REVIEW_REJECTED';
        const racing = [
          s.recordEvent({ key, interviewId: 'i1', onboardingStatus: 'MANUAL_REVIEW_REJECTED', payload: {}, receivedAt: 2000 }, { kind: 'verify', subject: 'i1', payload: { eventKey: key }, runAt: 2000 }),
          s.recordStep('i1', { step: 'results', outcome: 'ok', code: 'decline', at: 2000 }),
          s.advanceStatus('i1', 'MANUAL_REVIEW_REJECTED', 3, false, 2000),
        ];
        // The step and the status move wait for the erasure's lock (the inbox does not read the session).
        await waitFor(async () => {
          const { rows } = await adminPool().query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [eraserPid]);
          return rows[0].n >= 2;
        }, 5000, 10);
        await eraser.query('COMMIT');
        const [, , moved] = await Promise.all(racing);
        expect(await s.listSteps('i1')).toEqual([]);
        // The webhook's check finds the session erased and erases again: its event and its job's payload go.
        expect(await s.eraseSession('i1', 'late-webhook', 3000)).toBe(true);
        expect(await s.hasEvent(key)).toBe(false);
        expect((await s.listJobs('i1')).map((j) => j.payload)).toEqual([{}]);
        expect(moved).toMatchObject({ changed: false, session: { onboardingStatus: 'ONBOARDING_FINISHED', resultsStatus: 'erased' } });
      } finally {
        eraser.release();
      }
    });

    it("a dead callback's retry racing an erasure of its session waits for it, then leaves the retry out (never a deadlock)", async () => {
      const s = track(open(newSchema(), new Cipher([K1])));
      await s.migrate();
      await s.upsertSession({ interviewId: 'c1', origin: 'broker', token: 'tok-c1', now: 1000 });
      await s.enqueueJob({ kind: 'callback', subject: 'c1', payload: { event: 'results_ready', decision: 'approve' }, runAt: 1000 }, 1000);
      const [job] = await s.claimJobs('w', 1, 60_000, 1000, 'c1');
      // An erasure in progress, as eraseSession takes its locks: the session row first, then (below) its jobs.
      const eraser = await s.pool.connect();
      try {
        const eraserPid = (await eraser.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
        await eraser.query('BEGIN');
        await eraser.query("SELECT 1 FROM sessions WHERE interview_id = 'c1' FOR UPDATE");
        const retry = { kind: 'callback', subject: 'c1', payload: { decision: 'approve', deadSince: 2000 }, runAt: 3_602_000, dedupeKey: 'callback-retry:e1', whileLive: true };
        const dying = s.failJob(job, 'w', 'CALLBACK_HTTP_500', null, 2000, retry);
        await waitFor(async () => {
          const { rows } = await adminPool().query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [eraserPid]);
          return rows[0].n >= 1;
        }, 5000, 10);
        // The erasure goes on to the session's jobs, the dying one among them.
        await eraser.query("UPDATE jobs SET payload = '{}' WHERE subject = 'c1'");
        await eraser.query("UPDATE sessions SET results_status = 'erased' WHERE interview_id = 'c1'");
        await eraser.query('COMMIT');
        expect(await dying).toBe(true);
        expect((await s.listJobs('c1')).map((j) => ({ state: j.state, lastError: j.lastError, payload: j.payload }))).toEqual([{ state: 'dead', lastError: 'CALLBACK_HTTP_500', payload: {} }]);
      } finally {
        // A failure part way must not hand the pool a connection with its transaction still open.
        await eraser.query('ROLLBACK').catch(() => undefined);
        eraser.release();
      }
    });

    it('refuses a schema name that is not a plain lowercase identifier', () => {
      expect(() => open('bad"; DROP', new Cipher([K1]))).toThrow(/invalid schema name/);
    });
  });
});
