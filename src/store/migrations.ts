// Ordered, versioned schema migrations for both engines; each is applied once, in its own transaction.
import type { Database } from 'better-sqlite3';
import type { Pool, QueryConfig } from 'pg';
import { watchCheckedOut } from './unavailable';
import { isSchemaName } from './url';

export interface Migration {
  version: number;
  name: string;
  /** SQL, or a function for steps SQLite cannot say in SQL (it has no ADD COLUMN IF NOT EXISTS). */
  sqlite: string | ((db: Database) => void);
  postgres: string;
}

// Same logical schema on both engines. Times are epoch-ms integers (BIGINT on PostgreSQL, parsed back to numbers).
// PII columns (*_enc) hold Cipher envelopes, never plaintext.
/** Schema version 7, the same on both engines. */
const CLEAR_ERASED_DECISIONS = "UPDATE sessions SET decision = NULL, last_error = NULL WHERE results_status = 'erased' AND (decision IS NOT NULL OR last_error IS NOT NULL);";

// Written out, not shared with rows.ts: a migration stays what it was when it shipped.
const CLEAR_ERASED_TRACES = `
  DELETE FROM steps WHERE interview_id IN (SELECT interview_id FROM sessions WHERE results_status = 'erased');
  DELETE FROM events WHERE interview_id IN (SELECT interview_id FROM sessions WHERE results_status = 'erased');
  UPDATE jobs SET payload = '{}', dedupe_key = NULL
    WHERE kind IN ('callback', 'verify', 'results') AND subject IN (SELECT interview_id FROM sessions WHERE results_status = 'erased');
  UPDATE sessions SET onboarding_status = 'MANUAL_REVIEW_VERDICT'
    WHERE results_status = 'erased' AND onboarding_status IN ('MANUAL_REVIEW_APPROVED', 'MANUAL_REVIEW_REJECTED');`;

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial',
    sqlite: `
      CREATE TABLE sessions (
        interview_id TEXT PRIMARY KEY,
        origin TEXT NOT NULL,
        external_customer_id_enc TEXT,
        token_enc TEXT,
        token_hash TEXT,
        onboarding_status TEXT NOT NULL,
        status_rank INTEGER NOT NULL DEFAULT 0,
        results_status TEXT NOT NULL DEFAULT 'pending',
        decision TEXT,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        next_poll_at INTEGER,
        poll_attempts INTEGER NOT NULL DEFAULT 0,
        resume_token_hash TEXT,
        resume_expires_at INTEGER
      );
      CREATE INDEX sessions_token_hash ON sessions (token_hash) WHERE token_hash IS NOT NULL;
      CREATE INDEX sessions_resume_token_hash ON sessions (resume_token_hash) WHERE resume_token_hash IS NOT NULL;
      CREATE INDEX sessions_next_poll_at ON sessions (next_poll_at) WHERE next_poll_at IS NOT NULL;
      CREATE INDEX sessions_updated ON sessions (updated_at DESC, interview_id DESC);
      CREATE INDEX sessions_created_at ON sessions (created_at);

      CREATE TABLE steps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        interview_id TEXT NOT NULL REFERENCES sessions (interview_id) ON DELETE CASCADE,
        step TEXT NOT NULL,
        outcome TEXT NOT NULL,
        code TEXT,
        message TEXT,
        at INTEGER NOT NULL
      );
      CREATE INDEX steps_interview ON steps (interview_id, at);

      CREATE TABLE results (
        interview_id TEXT PRIMARY KEY REFERENCES sessions (interview_id) ON DELETE CASCADE,
        scores_enc TEXT NOT NULL,
        ocr_enc TEXT NOT NULL,
        key_id TEXT NOT NULL,
        fetched_at INTEGER NOT NULL
      );

      CREATE TABLE events (
        key TEXT PRIMARY KEY,
        interview_id TEXT NOT NULL,
        onboarding_status TEXT NOT NULL,
        payload TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        processed_at INTEGER
      );
      CREATE INDEX events_interview ON events (interview_id);

      CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        run_at INTEGER NOT NULL,
        lease_owner TEXT,
        lease_expires_at INTEGER,
        last_error TEXT,
        dedupe_key TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      );
      CREATE UNIQUE INDEX jobs_dedupe_active ON jobs (dedupe_key) WHERE state IN ('queued', 'running');
      CREATE INDEX jobs_state_run_at ON jobs (state, run_at);
      CREATE INDEX jobs_state_lease ON jobs (state, lease_expires_at);
      CREATE INDEX jobs_subject ON jobs (subject);

      CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT NOT NULL,
        at INTEGER NOT NULL
      );
      CREATE INDEX audit_subject ON audit (subject, id);

      CREATE TABLE idempotency_keys (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        response_enc TEXT,
        state TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
      );
      CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

    `,
    // COLLATE "C" keeps interview_id ordering (and so pagination) byte-wise, identical to SQLite.
    postgres: `
      CREATE TABLE sessions (
        interview_id TEXT COLLATE "C" PRIMARY KEY,
        origin TEXT NOT NULL,
        external_customer_id_enc TEXT,
        token_enc TEXT,
        token_hash TEXT,
        onboarding_status TEXT NOT NULL,
        status_rank INTEGER NOT NULL DEFAULT 0,
        results_status TEXT NOT NULL DEFAULT 'pending',
        decision TEXT,
        last_error TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        next_poll_at BIGINT,
        poll_attempts INTEGER NOT NULL DEFAULT 0,
        resume_token_hash TEXT COLLATE "C",
        resume_expires_at BIGINT
      );
      CREATE INDEX sessions_token_hash ON sessions (token_hash) WHERE token_hash IS NOT NULL;
      CREATE INDEX sessions_resume_token_hash ON sessions (resume_token_hash) WHERE resume_token_hash IS NOT NULL;
      CREATE INDEX sessions_next_poll_at ON sessions (next_poll_at) WHERE next_poll_at IS NOT NULL;
      CREATE INDEX sessions_updated ON sessions (updated_at DESC, interview_id DESC);
      CREATE INDEX sessions_created_at ON sessions (created_at);

      CREATE TABLE steps (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        interview_id TEXT COLLATE "C" NOT NULL REFERENCES sessions (interview_id) ON DELETE CASCADE,
        step TEXT NOT NULL,
        outcome TEXT NOT NULL,
        code TEXT,
        message TEXT,
        at BIGINT NOT NULL
      );
      CREATE INDEX steps_interview ON steps (interview_id, at);

      CREATE TABLE results (
        interview_id TEXT COLLATE "C" PRIMARY KEY REFERENCES sessions (interview_id) ON DELETE CASCADE,
        scores_enc TEXT NOT NULL,
        ocr_enc TEXT NOT NULL,
        key_id TEXT NOT NULL,
        fetched_at BIGINT NOT NULL
      );

      CREATE TABLE events (
        key TEXT PRIMARY KEY,
        interview_id TEXT NOT NULL,
        onboarding_status TEXT NOT NULL,
        payload JSONB NOT NULL,
        received_at BIGINT NOT NULL,
        processed_at BIGINT
      );
      CREATE INDEX events_interview ON events (interview_id);

      CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        payload JSONB NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        run_at BIGINT NOT NULL,
        lease_owner TEXT,
        lease_expires_at BIGINT,
        last_error TEXT,
        dedupe_key TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      );
      CREATE UNIQUE INDEX jobs_dedupe_active ON jobs (dedupe_key) WHERE state IN ('queued', 'running');
      CREATE INDEX jobs_state_run_at ON jobs (state, run_at);
      CREATE INDEX jobs_state_lease ON jobs (state, lease_expires_at);
      CREATE INDEX jobs_subject ON jobs (subject);

      CREATE TABLE audit (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail JSONB NOT NULL,
        at BIGINT NOT NULL
      );
      CREATE INDEX audit_subject ON audit (subject, id);

      CREATE TABLE idempotency_keys (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        response_enc TEXT,
        state TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (scope, key)
      );
      CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

    `,
  },
  {
    // As shipped; never edit a migration once it has shipped (a database that ran it would never see the edit).
    // Resume tokens name their session (interviewId.secret), so they are checked by primary key: the index
    // over their hashes only cost a random-page write on every new session.
    version: 2,
    name: 'resume-token-by-session',
    sqlite: 'DROP INDEX IF EXISTS sessions_resume_token_hash;',
    postgres: 'DROP INDEX IF EXISTS sessions_resume_token_hash;',
  },
  {
    // Lookups by session token (the app's own views) start from the interviewId the token names, checked by primary
    // key and then by the token's hash. Only tokens that do not name their session (a format Incode might adopt) stay
    // in the hash index: every other insert no longer writes a random index page. Rows from before keep their entry.
    version: 3,
    name: 'token-hash-index-for-opaque-tokens',
    sqlite: `
      ALTER TABLE sessions ADD COLUMN token_hash_indexed INTEGER NOT NULL DEFAULT 1;
      DROP INDEX IF EXISTS sessions_token_hash;
      CREATE INDEX sessions_opaque_token_hash ON sessions (token_hash) WHERE token_hash IS NOT NULL AND token_hash_indexed = 1;
    `,
    postgres: `
      ALTER TABLE sessions ADD COLUMN IF NOT EXISTS token_hash_indexed SMALLINT NOT NULL DEFAULT 1;
      DROP INDEX IF EXISTS sessions_token_hash;
      CREATE INDEX IF NOT EXISTS sessions_opaque_token_hash ON sessions (token_hash) WHERE token_hash IS NOT NULL AND token_hash_indexed = 1;
    `,
  },
  {
    // Version 1 shipped in two shapes and version 2 assumed the later one: the first (on SQLite a WITHOUT ROWID
    // sessions table, which it keeps: that layout only costs insert speed) kept resume tokens in a resume_tokens
    // table and had no resume columns on sessions. This brings either shape, whatever version it reached, to the
    // columns; the old table is dropped (its tokens cannot be checked by session, so they are refused and apps
    // start a new session). test/store/fixtures holds the first shape as shipped.
    version: 4,
    name: 'resume-token-columns-for-every-v1-shape',
    sqlite: (db) => {
      const columns = new Set((db.prepare("SELECT name FROM pragma_table_info('sessions')").all() as { name: string }[]).map((c) => c.name));
      if (!columns.has('resume_token_hash')) db.exec('ALTER TABLE sessions ADD COLUMN resume_token_hash TEXT');
      if (!columns.has('resume_expires_at')) db.exec('ALTER TABLE sessions ADD COLUMN resume_expires_at INTEGER');
      db.exec('DROP TABLE IF EXISTS resume_tokens;');
    },
    postgres: `
      ALTER TABLE sessions ADD COLUMN IF NOT EXISTS resume_token_hash TEXT COLLATE "C", ADD COLUMN IF NOT EXISTS resume_expires_at BIGINT;
      DROP TABLE IF EXISTS resume_tokens;
    `,
  },
  {
    // The flow a session was started with, so a resume's /omni/start names it too (Incode documents configurationId
    // as required there). Not personal data. Sessions stored before it have none, and resume without it, as before.
    version: 5,
    name: 'session-configuration-id',
    sqlite: 'ALTER TABLE sessions ADD COLUMN configuration_id TEXT;',
    postgres: 'ALTER TABLE sessions ADD COLUMN IF NOT EXISTS configuration_id TEXT;',
  },
  {
    // The retention sweep's selection (oldest sessions not yet erased): erased rows stay as tombstones at the old end
    // of created_at, so without this every sweep batch would step over all of them first, a cost that only grows.
    version: 6,
    name: 'sessions-purge-due-index',
    sqlite: "CREATE INDEX IF NOT EXISTS sessions_purge_due ON sessions (created_at, interview_id) WHERE results_status <> 'erased';",
    postgres: `CREATE INDEX IF NOT EXISTS sessions_purge_due ON sessions (created_at, interview_id COLLATE "C") WHERE results_status <> 'erased';`,
  },
  {
    // An erasure clears the decision and the last error too since this version (with the interviewId, the decision says
    // how a person's verification ended): the same for sessions erased before it.
    version: 7,
    name: 'erased-sessions-without-decision',
    sqlite: CLEAR_ERASED_DECISIONS,
    postgres: CLEAR_ERASED_DECISIONS,
  },
  {
    // A session's last sign of life (a status move, a resume, stored results), apart from updated_at, which a recorded
    // failure moves too: polling gives up counting from it. Rows from before stay null and read updated_at instead (no
    // rewrite of every row at upgrade).
    version: 8,
    name: 'session-active-at',
    sqlite: 'ALTER TABLE sessions ADD COLUMN active_at INTEGER;',
    postgres: 'ALTER TABLE sessions ADD COLUMN IF NOT EXISTS active_at BIGINT;',
  },
  {
    // An erasure deletes the session's steps and inbox events, clears its jobs' payloads and reads a reviewer's verdict
    // status as MANUAL_REVIEW_VERDICT since this version (each says how a person's verification ended): the same for
    // sessions erased before it.
    version: 9,
    name: 'erased-sessions-without-traces',
    sqlite: CLEAR_ERASED_TRACES,
    postgres: CLEAR_ERASED_TRACES,
  },
  {
    // Indexes for the queries that grow with the tables, measured on millions of rows: a job claim reads the due jobs in
    // order (it sorted the whole due backlog, 150 ms a claim at 200,000 queued); the hourly purge finds finished jobs and
    // processed events by age (it scanned both tables whole); and sessions_created_at goes: no query needs it, and
    // PostgreSQL's planner took it for the retention sweep's selection and stepped over every erased tombstone
    // (250 ms at 800,000 of them) instead of using sessions_purge_due.
    version: 10,
    name: 'indexes-at-scale',
    sqlite: `CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (state, run_at, created_at, id);
      DROP INDEX IF EXISTS jobs_state_run_at;
      CREATE INDEX IF NOT EXISTS jobs_state_updated ON jobs (state, updated_at);
      CREATE INDEX IF NOT EXISTS events_processed_at ON events (processed_at) WHERE processed_at IS NOT NULL;
      DROP INDEX IF EXISTS sessions_created_at;`,
    postgres: `CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (state, run_at, created_at, id);
      DROP INDEX IF EXISTS jobs_state_run_at;
      CREATE INDEX IF NOT EXISTS jobs_state_updated ON jobs (state, updated_at);
      CREATE INDEX IF NOT EXISTS events_processed_at ON events (processed_at) WHERE processed_at IS NOT NULL;
      DROP INDEX IF EXISTS sessions_created_at;`,
  },
  {
    // An Idempotency-Key names the session it started, so that erasing the session can clear what the key kept of the
    // request (its digests, which confirm a guess of the customer id to whoever holds the encryption key). Keys
    // completed before it have none, and keep their digests until they expire (IDEMPOTENCY_TTL_SECONDS).
    version: 11,
    name: 'idempotency-key-session',
    sqlite: `ALTER TABLE idempotency_keys ADD COLUMN interview_id TEXT;
      CREATE INDEX IF NOT EXISTS idempotency_keys_interview ON idempotency_keys (interview_id) WHERE interview_id IS NOT NULL;`,
    postgres: `ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS interview_id TEXT;
      CREATE INDEX IF NOT EXISTS idempotency_keys_interview ON idempotency_keys (interview_id) WHERE interview_id IS NOT NULL;`,
  },
  {
    // The fingerprint of each DATA_ENCRYPTION_KEY by its id (key-check.ts): a start with another key under an id
    // already used is refused, instead of reading every stored value as unreadable and writing new ones beside them.
    version: 12,
    name: 'encryption-key-fingerprints',
    sqlite: 'CREATE TABLE IF NOT EXISTS encryption_keys (key_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, created_at INTEGER NOT NULL);',
    postgres: 'CREATE TABLE IF NOT EXISTS encryption_keys (key_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, created_at BIGINT NOT NULL);',
  },
];

function checkOrder(migrations: readonly Migration[]): void {
  migrations.forEach((m, i) => {
    if (i > 0 && m.version <= migrations[i - 1].version) throw new Error(`migrations out of order at version ${m.version}`);
  });
}

/**
 * Refuses a database a newer build has migrated: this build would write rows the way its own schema wants (an older
 * build moves a status without what a later version keeps beside it, or leaves what a later one cleaned up), unseen.
 */
function refuseNewerSchema(newest: number | null, migrations: readonly Migration[]): void {
  const known = migrations.at(-1)?.version ?? 0;
  if (newest !== null && newest > known)
    throw new Error(
      `the database's schema is version ${newest}, newer than this build's ${known}: it was migrated by a newer release. Run a release at least as new (going back past a schema change needs the database restored from before it)`,
    );
}

/** SQLite: each migration in a BEGIN IMMEDIATE transaction, so processes sharing the file apply it once. Returns versions applied. */
export function migrateSqlite(db: Database, migrations: readonly Migration[] = MIGRATIONS): number[] {
  checkOrder(migrations);
  const applied: number[] = [];
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
  const newest = db.prepare('SELECT MAX(version) AS v FROM schema_migrations');
  const has = db.prepare('SELECT 1 FROM schema_migrations WHERE version = ?');
  const mark = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
  for (const m of migrations) {
    db.transaction(() => {
      // Inside the write lock, at every step: a newer release may be migrating the same file right now.
      refuseNewerSchema((newest.get() as { v: number | null }).v, migrations);
      // Re-checked inside the write lock: another process may have applied it since we looked.
      if (has.get(m.version)) return;
      if (typeof m.sqlite === 'string') db.exec(m.sqlite);
      else m.sqlite(db);
      mark.run(m.version, m.name, Date.now());
      applied.push(m.version);
    }).immediate();
  }
  return applied;
}

export function quoteIdent(name: string): string {
  if (!isSchemaName(name)) throw new Error('invalid schema name (lowercase letters, digits, _)');
  return `"${name}"`;
}

/** A day: the client-side bound on one migration statement (the server-side one is off for migrations). */
const MIGRATION_TIMEOUT_MS = 24 * 3600 * 1000;

/**
 * How a migration waits for the table locks it needs: a few seconds at a time, then it lets go and tries again. A lock
 * request waiting behind an open transaction (an older replica's, in a rolling deploy) queues every later query on
 * that table behind it, so a wait without a bound would stall the replicas still serving; one that gives up at once
 * would fail every start while traffic runs.
 */
export interface MigrationLockWait {
  lockTimeoutMs: number;
  attempts: number;
}

const LOCK_WAIT: MigrationLockWait = { lockTimeoutMs: 2000, attempts: 30 };

/**
 * PostgreSQL: each migration in a transaction holding a per-schema advisory lock, so replicas starting
 * together apply it exactly once. Creates the schema when it is not `public`. Returns versions applied.
 */
export async function migratePostgres(
  pool: Pool,
  schema = 'public',
  migrations: readonly Migration[] = MIGRATIONS,
  lockWait: MigrationLockWait = LOCK_WAIT,
): Promise<number[]> {
  checkOrder(migrations);
  const q = quoteIdent(schema);
  const applied: number[] = [];
  const client = await pool.connect();
  // A connection the server ends between statements fails the start, as the error it raised.
  const watch = watchCheckedOut(client);
  // DATABASE_TIMEOUT_MS bounds a request's statements, not a migration: an index rebuild on a large table, or the
  // wait for another replica's migration, may take longer, and failing the start over and over would not help.
  // (pg cannot turn its client-side query_timeout off per query, only raise it.)
  const run = (text: string, values?: unknown[]) => client.query({ text, values, query_timeout: MIGRATION_TIMEOUT_MS } as QueryConfig);
  try {
    // Once for the connection (reset before it goes back to the pool), not once per migration.
    await run('SET statement_timeout = 0');
    for (const m of migrations) {
      for (let attempt = 1; ; attempt++) {
        await run('BEGIN');
        try {
          // Waiting for another replica's migration is not bounded (it holds no table lock others queue behind).
          await run('SELECT pg_advisory_xact_lock(hashtext($1))', [`incode-broker:migrations:${schema}`]);
          await run(`SET LOCAL lock_timeout = ${Math.max(1, Math.round(lockWait.lockTimeoutMs))}`);
          if (schema !== 'public') await run(`CREATE SCHEMA IF NOT EXISTS ${q}`);
          // Pin the schema for this transaction even if the pool's connection options did not.
          await run(`SET LOCAL search_path TO ${q}`);
          await run('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)');
          // Under the advisory lock, at every step: a newer release may have migrated since this one began.
          refuseNewerSchema((await run('SELECT MAX(version) AS v FROM schema_migrations')).rows[0].v, migrations);
          const { rowCount } = await run('SELECT 1 FROM schema_migrations WHERE version = $1', [m.version]);
          if (!rowCount) {
            await run(m.postgres);
            await run('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, Date.now()]);
          }
          await run('COMMIT');
          if (!rowCount) applied.push(m.version);
          break;
        } catch (err) {
          await run('ROLLBACK').catch(() => undefined);
          // 55P03: lock_timeout. Let the queries queued behind the lock request through, then ask again. 40P01: chosen
          // as a deadlock's victim against a serving replica's transaction, which has gone on: the same.
          const code = (err as { code?: unknown }).code;
          if (code !== '55P03' && code !== '40P01') throw err;
          if (attempt >= lockWait.attempts)
            throw new Error(`schema migration ${m.version} (${m.name}) could not take its table locks in ${lockWait.attempts} tries of ${lockWait.lockTimeoutMs} ms: a long transaction holds them; start again once it ends`);
          await new Promise((r) => setTimeout(r, Math.min(lockWait.lockTimeoutMs, 1000)));
        }
      }
    }
  } catch (err) {
    throw watch.lost ?? err;
  } finally {
    if (!watch.lost) await run('RESET statement_timeout').catch(() => undefined);
    watch.release();
  }
  return applied;
}
