// Runs the store contract on SQLite (temp file and :memory:) plus SQLite-only checks: raw file bytes, WAL, throughput.
import { execFile } from 'node:child_process';
import { readFileSync, existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { Cipher, sha256Hex } from '../../src/store/crypto';
import { MIGRATIONS, migrateSqlite } from '../../src/store/migrations';
import { aad, countJobsSql, historyPurgeSql, PURGE_BATCH, SESSION_PURGE_BATCH, sqliteArgs } from '../../src/store/rows';
import { CLAIM_JOBS, PURGE_DUE, SqliteStore } from '../../src/store/sqlite-store';
import { loadConfig } from '../../src/config';
import { brokerEnv, startBroker } from '../helpers/harness';
import { isDatabaseUnavailable } from '../../src/store/unavailable';
import { REKEY_START } from '../../src/store/rekey';
import { tempDir } from '../helpers/temp';
import { K1, K2, runStoreContract, type StoreHarness } from './store-contract';

function harness(store: SqliteStore, extra: Partial<StoreHarness> & { cleanup(): Promise<void> }): StoreHarness {
  return {
    store,
    async exec(sql, params = []) {
      const st = store.db.prepare(sql);
      if (st.reader) return st.all(...params) as Record<string, unknown>[];
      st.run(...params);
      return [];
    },
    async dump() {
      return store.db.serialize().toString('latin1');
    },
    ...extra,
  };
}

// A session row as version 1's code wrote it (today's code writes columns version 1 did not have).
function insertV1Session(db: Database.Database, cipher: Cipher, interviewId: string, token: string, resume?: { hash: string; expiresAt: number }): void {
  const cols = resume ? ', resume_token_hash, resume_expires_at' : '';
  const vals = resume ? ', ?, ?' : '';
  db.prepare(
    `INSERT INTO sessions (interview_id, origin, token_enc, token_hash, onboarding_status, created_at, updated_at${cols}) VALUES (?, 'broker', ?, ?, 'UNKNOWN', 1e12, 1e12${vals})`,
  ).run(interviewId, cipher.encrypt(token, aad.token(interviewId)), sha256Hex(token), ...(resume ? [resume.hash, resume.expiresAt] : []));
}

function tempFile(): string {
  return join(tempDir('store-sqlite-'), 'nested', 'broker.db');
}

runStoreContract('sqlite file', async (cipher) => {
  const file = tempFile();
  const store = new SqliteStore({ filename: file, cipher });
  return harness(store, {
    open: async (c: Cipher) => {
      const s = new SqliteStore({ filename: file, cipher: c });
      await s.migrate();
      return s;
    },
    // What is on disk, not what the connection can see: checkpoint the WAL into the main file, then read bytes.
    async dump() {
      store.db.pragma('wal_checkpoint(TRUNCATE)');
      const wal = `${file}-wal`;
      return readFileSync(file).toString('latin1') + (existsSync(wal) ? readFileSync(wal).toString('latin1') : '');
    },
    cleanup: () => store.close(),
  });
});

runStoreContract('sqlite :memory:', async (cipher) => {
  const store = new SqliteStore({ filename: ':memory:', cipher });
  return harness(store, { cleanup: () => store.close() });
}, { shared: false });

describe('SqliteStore specifics', () => {
  it('refuses a database a newer release migrated, naming both versions, and changes nothing in it', async () => {
    const store = new SqliteStore({ filename: ':memory:', cipher: new Cipher([K1]) });
    await store.migrate();
    const latest = MIGRATIONS.at(-1)!.version;
    store.db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, 0)').run(latest + 1, 'from-the-future');
    await expect(store.migrate()).rejects.toThrow(new RegExp(`schema is version ${latest + 1}, newer than this build's ${latest}`));
    // An older build is the same case: this one, knowing fewer migrations, on a database at the full list.
    expect(() => migrateSqlite(store.db, MIGRATIONS.slice(0, -1))).toThrow(new RegExp(`version ${latest + 1}, newer than this build's ${MIGRATIONS.at(-2)!.version}`));
    await store.close();
  });

  it("the retention sweep's selection searches the sessions not yet erased, never stepping over the erased ones", async () => {
    const store = new SqliteStore({ filename: ':memory:', cipher: new Cipher([K1]) });
    await store.migrate();
    // The shape purgeExpired selects with: erased rows (kept as tombstones at the old end) are outside the index.
    const plan = store.db.prepare(`EXPLAIN QUERY PLAN ${PURGE_DUE}`).all(0) as { detail: string }[];
    expect(plan.map((p) => p.detail)).toEqual([expect.stringContaining('USING INDEX sessions_purge_due')]);
    await store.close();
  });

  it("the metrics' queue depth reads the queue's index ranges, never every done job", async () => {
    const store = new SqliteStore({ filename: ':memory:', cipher: new Cipher([K1]) });
    await store.migrate();
    const plan = (store.db.prepare(`EXPLAIN QUERY PLAN ${countJobsSql(false)}`).all() as { detail: string }[]).map((p) => p.detail);
    expect(plan).toEqual([expect.stringMatching(/^SEARCH jobs USING COVERING INDEX jobs_(claim|state_lease|state_updated) \(state=\?\)$/)]);
    await store.close();
  });

  it('finds the history the hourly purge drops by index, never by a scan of jobs or events', async () => {
    const store = new SqliteStore({ filename: ':memory:', cipher: new Cipher([K1]) });
    await store.migrate();
    const plans = historyPurgeSql(sqliteArgs).map((sql) => (store.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(0, 10) as { detail: string }[]).map((p) => p.detail).join(' | '));
    expect(plans[0]).toMatch(/SEARCH jobs USING (COVERING )?INDEX jobs_state_updated \(state=\? AND updated_at<\?\)/);
    expect(plans[1]).toMatch(/SEARCH events USING (COVERING )?INDEX events_processed_at \(processed_at<\?\)/);
    await store.close();
  });

  it('claims jobs by reading the due queue in its index order, never sorting the whole due backlog', async () => {
    const store = new SqliteStore({ filename: ':memory:', cipher: new Cipher([K1]) });
    await store.migrate();
    const plan = (store.db.prepare(`EXPLAIN QUERY PLAN ${CLAIM_JOBS}`).all({ owner: 'w', exp: 1, now: 1, limit: 10, subject: null }) as { detail: string }[]).map((p) => p.detail);
    expect(plan).toContain('SEARCH jobs USING INDEX jobs_claim (state=? AND run_at<?)');
    // The only sorts: the few lapsed leases, and the two short lists merged.
    expect(plan.filter((d) => d.includes('TEMP B-TREE')).length).toBeLessThanOrEqual(2);
    await store.close();
  });

  it('uses WAL, synchronous=NORMAL, a busy timeout and foreign keys', async () => {
    const store = new SqliteStore({ filename: tempFile(), cipher: new Cipher([K1]) });
    await store.migrate();
    expect(store.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(store.db.pragma('synchronous', { simple: true })).toBe(1);
    expect(store.db.pragma('busy_timeout', { simple: true })).toBe(5000);
    expect(store.db.pragma('foreign_keys', { simple: true })).toBe(1);
    expect(store.db.pragma('secure_delete', { simple: true })).toBe(1);
    await store.close();
    await store.close();
  });

  it('leaves no copy of an erased or re-encrypted value in the file, and a re-encryption never overwrites a value written since its read', async () => {
    const file = tempFile();
    const k1 = new Cipher([K1]);
    const store = new SqliteStore({ filename: file, cipher: k1 });
    await store.migrate();
    for (const id of ['a', 'b', 'c']) await store.upsertSession({ interviewId: id, origin: 'broker', token: `tok-${id}`, externalCustomerId: `ext-${id}`, now: 1 });
    // OCR data larger than a page lives on overflow pages, which an erasure frees whole.
    const ocr = { fullName: 'A', pages: Array.from({ length: 400 }, (_, i) => `field-${i}-value`) };
    await store.saveResults('a', { scores: { s: 1 }, ocr, fetchedAt: 1 }, 'approve', 1);
    await store.saveResults('b', { scores: { s: 2 }, ocr, fetchedAt: 1 }, 'approve', 1);
    const values = (id: string) => ({
      ...(store.db.prepare('SELECT token_enc, external_customer_id_enc FROM sessions WHERE interview_id = ?').get(id) as Record<string, string>),
      ...(store.db.prepare('SELECT scores_enc, ocr_enc FROM results WHERE interview_id = ?').get(id) as Record<string, string>),
    });
    const underK1 = [...Object.values(values('a')), ...Object.values(values('b'))];
    expect(values('a').ocr_enc.length).toBeGreaterThan(8192);

    const k2 = new SqliteStore({ filename: file, cipher: new Cipher([K2, K1]) });
    // The batch reads now; before its write lands, this service rewrites c's token (a resume, say) on the other connection.
    const batch = k2.reencryptBatch(REKEY_START, 10);
    const newer = k1.encrypt('tok-c2', aad.token('c'));
    store.db.prepare('UPDATE sessions SET token_enc = ? WHERE interview_id = ?').run(newer, 'c');
    // a's and b's tokens and customer ids; c's row is left whole, as its token is no longer the value that was read.
    expect(await batch).toMatchObject({ found: 6, reencrypted: 4, unreadable: 0 });
    // The results, in the next table.
    expect(await k2.reencryptBatch({ table: 1, after: null }, 10)).toMatchObject({ found: 4, reencrypted: 4 });
    expect((store.db.prepare("SELECT token_enc FROM sessions WHERE interview_id = 'c'").get() as { token_enc: string }).token_enc).toBe(newer);
    expect((await k2.getSession('c'))?.token).toBe('tok-c2');
    // The next pass takes it as it is now (the newer token was written under k1 too).
    expect(await k2.reencryptBatch(REKEY_START, 10)).toMatchObject({ found: 2, reencrypted: 2, unreadable: 0 });
    const onlyK2 = new SqliteStore({ filename: file, cipher: new Cipher([K2]) });
    expect((await onlyK2.getSession('c'))?.token).toBe('tok-c2');
    await onlyK2.close();

    // Erased last, so that no later write reuses the pages it freed, and once in the database file itself, as a value
    // erased after the WAL was checkpointed is (FAST would leave its overflow pages there as they were).
    const erased = Object.values(values('a'));
    store.db.pragma('wal_checkpoint(TRUNCATE)');
    await store.eraseSession('a', 'test', 2);
    store.db.pragma('wal_checkpoint(TRUNCATE)');
    const raw = readFileSync(file).toString('latin1');
    // Pieces of each value: one larger than a page is split over overflow pages, so it is never in the file whole.
    const pieces = (v: string) => Array.from({ length: Math.ceil(v.length / 64) }, (_, i) => v.slice(i * 64, i * 64 + 64)).filter((p) => p.length >= 16);
    for (const v of [...underK1, ...erased]) for (const p of pieces(v)) expect(raw).not.toContain(p);
    await k2.close();
    await store.close();
  });

  it('truncateLog empties the WAL, so an erased value is in neither file; with another process reading, it answers false at once', async () => {
    const file = tempFile();
    const store = new SqliteStore({ filename: file, cipher: new Cipher([K1]) });
    await store.migrate();
    await store.upsertSession({ interviewId: 'a', origin: 'broker', token: 'tok-a', externalCustomerId: 'ext-a', now: 1 });
    const { token_enc: erased } = store.db.prepare("SELECT token_enc FROM sessions WHERE interview_id = 'a'").get() as { token_enc: string };
    await store.eraseSession('a', 'test', 2);
    // Zeroed in the page the erasure wrote, but the WAL still holds the page as it was written before.
    expect(readFileSync(`${file}-wal`).toString('latin1')).toContain(erased);
    const reader = new Database(file);
    reader.exec('BEGIN');
    reader.prepare('SELECT count(*) FROM sessions').get();
    // At once: not after the busy timeout (5 s) another process's lock would cost every other write.
    const asked = Date.now();
    expect(await store.truncateLog()).toBe(false);
    expect(Date.now() - asked).toBeLessThan(2500);
    expect(store.db.pragma('busy_timeout', { simple: true })).toBe(5000);
    reader.exec('COMMIT');
    reader.close();
    expect(await store.truncateLog()).toBe(true);
    expect(statSync(`${file}-wal`).size).toBe(0);
    expect(readFileSync(file).toString('latin1')).not.toContain(erased);
    await store.close();
  });

  it('SQLITE_SYNCHRONOUS=full reaches the connection (an fsync per commit), through the store the app creates', async () => {
    const b = await startBroker(brokerEnv('http://127.0.0.1:9', { DATABASE_URL: `sqlite:${tempFile()}`, SQLITE_SYNCHRONOUS: 'full' }), { runWorker: false });
    try {
      expect((b.app.store as SqliteStore).db.pragma('synchronous', { simple: true })).toBe(2);
    } finally {
      await b.close();
    }
    expect(() => loadConfig({ SQLITE_SYNCHRONOUS: 'off' })).toThrow(/SQLITE_SYNCHRONOUS/);
  });

  it('group commit: a database locked by another process fails the batch after one wait, not one per retry', async () => {
    const file = tempFile();
    const store = new SqliteStore({ filename: file, cipher: new Cipher([K1]) });
    await store.migrate();
    store.db.pragma('busy_timeout = 50');
    const other = new Database(file);
    other.exec('BEGIN IMMEDIATE');
    const transactions = jest.spyOn(store.db, 'transaction');
    try {
      const results = await Promise.allSettled([store.upsertSession({ interviewId: 'a', origin: 'broker', now: 1 }), store.upsertSession({ interviewId: 'b', origin: 'broker', now: 1 })]);
      expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
      expect(String((results[0] as PromiseRejectedResult).reason)).toMatch(/locked|busy/i);
      // One BEGIN IMMEDIATE attempt for the batch: no second run with savepoints.
      expect(transactions).toHaveBeenCalledTimes(1);
    } finally {
      transactions.mockRestore();
      other.exec('ROLLBACK');
      other.close();
      await store.close();
    }
  });

  it('group commit: thousands of concurrent writes all land once, and a failing write fails alone', async () => {
    const store = new SqliteStore({ filename: tempFile(), cipher: new Cipher([K1]) });
    await store.migrate();
    const n = 3000;
    const event = (i: number) => store.recordEvent({ key: `i${i}:DONE`, interviewId: `i${i}`, onboardingStatus: 'DONE', payload: { i }, receivedAt: i }, { kind: 'fetch-results', subject: `i${i}`, runAt: i });
    const first = await Promise.all(Array.from({ length: n }, (_, i) => event(i)));
    expect(first.every(Boolean)).toBe(true);
    // Duplicates in the same batch as new events: only the new ones insert.
    const second = await Promise.all(Array.from({ length: 20 }, (_, i) => event(n - 10 + i)));
    expect(second.filter(Boolean)).toHaveLength(10);
    expect((await store.countJobs()).queued).toBe(n + 10);
    // saveResults on an unknown session throws; the writes batched with it still commit.
    const [bad, good] = await Promise.allSettled([
      store.saveResults('nope', { scores: {}, ocr: {}, fetchedAt: 1 }, 'approve', 1),
      store.upsertSession({ interviewId: 'ok1', origin: 'broker', now: 1 }),
    ]);
    expect(bad.status).toBe('rejected');
    expect(good.status).toBe('fulfilled');
    expect(await store.getSession('ok1')).not.toBeNull();
    await store.close();
  });

  it('retention sweep: a backlog larger than one batch is erased in several transactions, jobs and events too', async () => {
    const store = new SqliteStore({ filename: tempFile(), cipher: new Cipher([K1]) });
    await store.migrate();
    const sessions = SESSION_PURGE_BATCH * 2 + 7;
    const insert = store.db.prepare(`INSERT INTO sessions (interview_id, origin, token_enc, onboarding_status, created_at, updated_at) VALUES (?, 'broker', NULL, 'UNKNOWN', 1000, 1000)`);
    const jobs = store.db.prepare(`INSERT INTO jobs (id, kind, subject, payload, state, attempts, run_at, created_at, updated_at) VALUES (?, 'verify', 's', '{}', 'done', 1, 1, 1, 1)`);
    const events = store.db.prepare(`INSERT INTO events (key, interview_id, onboarding_status, payload, received_at, processed_at) VALUES (?, 'i', 'DONE', '{}', 1, 1)`);
    store.db.transaction(() => {
      for (let i = 0; i < sessions; i++) insert.run(`old${String(i).padStart(6, '0')}`);
      for (let i = 0; i < PURGE_BATCH * 2 + 3; i++) {
        jobs.run(`j${i}`);
        events.run(`e${i}`);
      }
    })();
    insert.run('young');
    store.db.prepare('UPDATE sessions SET created_at = 9000 WHERE interview_id = ?').run('young');
    const transactions = jest.spyOn(store.db, 'transaction');
    try {
      expect(await store.purgeExpired(5000, 10_000)).toBe(sessions);
      // Three session batches, the idempotency-key sweep, three batches each of jobs and events.
      expect(transactions.mock.calls.length).toBe(3 + 1 + 3 + 3);
    } finally {
      transactions.mockRestore();
    }
    const count = (sql: string) => (store.db.prepare(sql).get() as { n: number }).n;
    expect(count(`SELECT count(*) AS n FROM sessions WHERE results_status = 'erased'`)).toBe(sessions);
    expect(count(`SELECT count(*) AS n FROM audit WHERE kind = 'retention-purge'`)).toBe(sessions);
    expect(count('SELECT count(*) AS n FROM jobs')).toBe(0);
    expect(count('SELECT count(*) AS n FROM events')).toBe(0);
    expect(await store.getSession('young')).toMatchObject({ resultsStatus: 'pending' });
    await store.close();
  });

  it('migrations from two connections to one file apply once', async () => {
    const file = tempFile();
    const a = new SqliteStore({ filename: file, cipher: new Cipher([K1]) });
    const b = new SqliteStore({ filename: file, cipher: new Cipher([K1]) });
    await Promise.all([a.migrate(), b.migrate()]);
    await b.migrate();
    expect(a.db.prepare('SELECT count(*) AS n FROM schema_migrations').get()).toEqual({ n: MIGRATIONS.length });
    await a.close();
    await b.close();
  });

  it('upgrades the later shape of version 1 in place: sessions, resume tokens and idempotency keys survive, the hash index goes', async () => {
    const file = tempFile();
    const old = new SqliteStore({ filename: file, cipher: new Cipher([K1]) });
    migrateSqlite(old.db, MIGRATIONS.slice(0, 1));
    insertV1Session(old.db, new Cipher([K1]), 'i1', 't1', { hash: 'rh', expiresAt: 2e12 });
    // Claimed and completed as version 1's code did it (today's code completes a key with the session's own write, and
    // names the session in a column version 1 does not have).
    old.db
      .prepare(`INSERT INTO idempotency_keys (scope, key, request_hash, response_enc, state, expires_at, created_at) VALUES ('session:a', 'k1', 'h1', ?, 'done', 2e12, 1e12)`)
      .run(new Cipher([K1]).encryptJson({ interviewId: 'i1' }, aad.idempotencyResponse('session:a', 'k1')));
    await old.close();

    const store = new SqliteStore({ filename: file, cipher: new Cipher([K1]) });
    await store.migrate();
    expect(store.db.prepare('SELECT version FROM schema_migrations ORDER BY version').all()).toEqual(MIGRATIONS.map((m) => ({ version: m.version })));
    expect((await store.getSession('i1'))?.token).toBe('t1');
    expect(await store.checkResumeToken('i1', 'rh', 1e12 + 1)).toBe(true);
    // Its response predates the request's SHA-256: a replay compares the request_hash column.
    expect(await store.claimIdempotencyKey('session:a', 'k1', 'h1', 2e12, 1e12 + 1)).toEqual({ state: 'done', requestHash: 'h1', interviewId: 'i1' });
    expect(store.db.prepare("SELECT name FROM sqlite_master WHERE name = 'sessions_resume_token_hash'").all()).toEqual([]);
    // Migration 3: the old row keeps its entry in the (now partial) token-hash index, so its opaque token still finds it.
    expect(store.db.prepare("SELECT name FROM sqlite_master WHERE name LIKE 'sessions_%token_hash'").all()).toEqual([{ name: 'sessions_opaque_token_hash' }]);
    expect((await store.getSessionByToken('t1'))?.interviewId).toBe('i1');
    await store.close();
  });

  it('schema version 7 clears the decision and last error of sessions erased before it, and leaves the others', async () => {
    const file = tempFile();
    const old = new SqliteStore({ filename: file, cipher: new Cipher([K1]) });
    migrateSqlite(old.db, MIGRATIONS.filter((m) => m.version < 7));
    const insert = old.db.prepare("INSERT INTO sessions (interview_id, origin, onboarding_status, status_rank, results_status, decision, last_error, created_at, updated_at, poll_attempts) VALUES (?, 'broker', 'ONBOARDING_FINISHED', 2, ?, ?, ?, 1, 1, 0)");
    insert.run('erased1', 'erased', 'decline', 'INCODE_UNAVAILABLE');
    insert.run('kept1', 'ready', 'approve', null);
    await old.close();
    const store = new SqliteStore({ filename: file, cipher: new Cipher([K1]) });
    await store.migrate();
    expect(await store.getSession('erased1')).toMatchObject({ resultsStatus: 'erased', decision: null, lastError: null });
    expect(await store.getSession('kept1')).toMatchObject({ resultsStatus: 'ready', decision: 'approve' });
    await store.close();
  });

  it('schema version 9 removes what said how an erased session ended (steps, inbox, job payloads, a verdict status), and leaves the others', async () => {
    const file = tempFile();
    const old = new SqliteStore({ filename: file, cipher: new Cipher([K1]) });
    migrateSqlite(old.db, MIGRATIONS.filter((m) => m.version < 9));
    const insert = old.db.prepare("INSERT INTO sessions (interview_id, origin, onboarding_status, status_rank, results_status, created_at, updated_at, poll_attempts) VALUES (?, 'broker', ?, 3, ?, 1, 1, 0)");
    insert.run('erased1', 'MANUAL_REVIEW_REJECTED', 'erased');
    insert.run('kept1', 'MANUAL_REVIEW_APPROVED', 'ready');
    for (const id of ['erased1', 'kept1']) {
      old.db.prepare("INSERT INTO steps (interview_id, step, outcome, code, at) VALUES (?, 'results', 'ok', 'decline', 1)").run(id);
      old.db.prepare("INSERT INTO events (key, interview_id, onboarding_status, payload, received_at) VALUES (?, ?, 'MANUAL_REVIEW_REJECTED', '{}', 1)").run(`${id}:MANUAL_REVIEW_REJECTED`, id);
      old.db.prepare(`INSERT INTO jobs (id, kind, subject, payload, state, attempts, run_at, dedupe_key, created_at, updated_at) VALUES (?, 'verify', ?, '{"claimed":"MANUAL_REVIEW_REJECTED"}', 'done', 1, 1, ?, 1, 1)`).run(`job-${id}`, id, `verify:${id}`);
    }
    await old.close();
    const store = new SqliteStore({ filename: file, cipher: new Cipher([K1]) });
    await store.migrate();
    expect(await store.getSession('erased1')).toMatchObject({ onboardingStatus: 'MANUAL_REVIEW_VERDICT', statusRank: 3 });
    expect(await store.listSteps('erased1')).toEqual([]);
    expect(await store.hasEvent('erased1:MANUAL_REVIEW_REJECTED')).toBe(false);
    expect((await store.listJobs('erased1'))[0].payload).toEqual({});
    expect(await store.getSession('kept1')).toMatchObject({ onboardingStatus: 'MANUAL_REVIEW_APPROVED' });
    expect(await store.listSteps('kept1')).toHaveLength(1);
    expect(await store.hasEvent('kept1:MANUAL_REVIEW_REJECTED')).toBe(true);
    expect((await store.listJobs('kept1'))[0].payload).toEqual({ claimed: 'MANUAL_REVIEW_REJECTED' });
    await store.close();
  });

  it.each([
    ['from version 1', 1],
    ['after version 2 as it shipped (which assumed the later shape)', 2],
  ])('upgrades the first shape of version 1 (sessions WITHOUT ROWID, resume tokens in their own table) %s: the columns come, the table goes', async (_n, reached) => {
    const file = tempFile();
    const old = new SqliteStore({ filename: file, cipher: new Cipher([K1]) });
    // Version 1 exactly as it first shipped, from the fixture.
    old.db.exec(readFileSync(join(__dirname, 'fixtures', 'v1-first-shape.sqlite.sql'), 'utf8'));
    old.db.exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL);
      INSERT INTO schema_migrations VALUES (1, 'initial', 1000000000000);`);
    if (reached === 2) migrateSqlite(old.db, MIGRATIONS.slice(0, 2));
    insertV1Session(old.db, new Cipher([K1]), 'i1', 't1');
    old.db.exec(`INSERT INTO resume_tokens (token_hash, interview_id, expires_at, created_at) VALUES ('old-hash', 'i1', 2000000000000, 1000000000000)`);
    await old.close();

    const store = new SqliteStore({ filename: file, cipher: new Cipher([K1]) });
    await store.migrate();
    expect(store.db.prepare('SELECT version FROM schema_migrations ORDER BY version').all()).toEqual(MIGRATIONS.map((m) => ({ version: m.version })));
    expect((await store.getSession('i1'))?.token).toBe('t1');
    expect(store.db.prepare("SELECT name FROM sqlite_master WHERE name IN ('resume_tokens', 'sessions_resume_token_hash')").all()).toEqual([]);
    expect(await store.checkResumeToken('i1', 'old-hash', 1e12 + 1)).toBe(false);
    expect((await store.getSessionByToken('t1'))?.interviewId).toBe('i1');
    await store.createResumeToken('rh', 'i1', 2e12);
    expect(await store.checkResumeToken('i1', 'rh', 1e12 + 3)).toBe(true);
    await store.close();
  });

  it('several processes sharing one file never claim the same job', async () => {
    const file = tempFile();
    const store = new SqliteStore({ filename: file, cipher: new Cipher([K1]) });
    await store.migrate();
    const n = 300;
    for (let i = 0; i < n; i++) await store.enqueueJob({ kind: 'k', subject: `j${i}`, runAt: 0 }, 0);
    const tsx = resolve(__dirname, '../../node_modules/.bin/tsx');
    const worker = resolve(__dirname, 'fixtures/sqlite-claim-worker.ts');
    const run = promisify(execFile);
    const outs = await Promise.all(['p1', 'p2', 'p3'].map((owner) => run(tsx, [worker, file, owner], { timeout: 60_000 })));
    const ids = outs.flatMap((o) => JSON.parse(o.stdout) as string[]);
    expect(ids).toHaveLength(n);
    expect(new Set(ids).size).toBe(n);
    expect(await store.countJobs()).toEqual({ queued: 0, running: 0, done: n, dead: 0 });
    await store.close();
  }, 60_000);
});

describe('a SQLite file whose directory cannot be made', () => {
  it('fails at once naming the directory, never spinning (Node 20 recursive mkdir loops for good under /proc)', async () => {
    // In a child process (one: node with tsx's loader), killed at its timeout: the old spin ignored every other signal
    // and would have held the test runner.
    const code = `const { SqliteStore } = require(${JSON.stringify(resolve(__dirname, '../../src/store/sqlite-store'))});
      const { Cipher } = require(${JSON.stringify(resolve(__dirname, '../../src/store/crypto'))});
      try { new SqliteStore({ filename: '/proc/no-such-dir/sub/x.db', cipher: new Cipher([{ id: 'k1', key: Buffer.alloc(32, 1) }]) }); console.log('opened'); }
      catch (e) { console.log(JSON.stringify({ code: e.code, path: e.path })); }`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '-e', code], { cwd: resolve(__dirname, '../..'), timeout: 20_000, killSignal: 'SIGKILL' });
    expect(JSON.parse(stdout.trim())).toEqual({ code: 'ENOENT', path: '/proc/no-such-dir' });
  }, 30_000);
});

describe('a SQLite file locked by another process', () => {
  it('reads as "database unavailable" (503), not as a bug', () => {
    const dir = tempDir('sqlite-busy-');
    const a = new Database(join(dir, 'b.db'));
    const b = new Database(join(dir, 'b.db'));
    try {
      a.exec('CREATE TABLE t (x)');
      b.pragma('busy_timeout = 0');
      a.exec('BEGIN IMMEDIATE');
      let err: unknown;
      try {
        b.exec('BEGIN IMMEDIATE');
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'SQLITE_BUSY' });
      expect(isDatabaseUnavailable(err)).toBe(true);
      // A wrong statement stays a bug.
      expect(isDatabaseUnavailable((() => { try { a.exec('SELECT * FROM nope'); } catch (e) { return e; } })())).toBe(false);
    } finally {
      a.close();
      b.close();
    }
  });
});
