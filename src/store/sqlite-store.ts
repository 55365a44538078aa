// Store over better-sqlite3: WAL, cached prepared statements, BEGIN IMMEDIATE for every read-then-write so several processes can share a file.
import Database from 'better-sqlite3';
import type { Database as Db, Statement } from 'better-sqlite3';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Cipher, hashesEqual } from './crypto';
import { TurnBatch } from '../util/turn-batch';
import { migrateSqlite } from './migrations';
import { keySamples } from './key-check';
import { IN_MEMORY } from './url';
import { reencryptBatch, rekeySelectSql, rekeyUpdateNamed, rekeyUpdateSqlite } from './rekey';
import {
  aad,
  byRunAt,
  clampLimit,
  decodeCursor,
  countJobsSql,
  emptyCounts,
  encodeCursor,
  jsonText,
  idempotencyDoneSql,
  activeJobSql,
  recordStepSql,
  recordStepParams,
  INSERT_JOB,
  doneSinceSql,
  jobsOfKindSql,
  repeatsLatest,
  wakeQueuedJobSql,
  CLAIM_ORDER,
  dueJobsSql,
  movedTo,
  setResultsStatusSql,
  RESULTS_UPSERT_TAIL,
  sqliteArgs,
  freshSessionRecord,
  newId,
  erasureIncodeDeleteJob,
  incodeDeleteJob,
  sessionInsertSql,
  sessionInsertValues,
  sessionMergeSql,
  spentResumeMarker,
  resumeSpendable,
  isResumeHash,
  PURGE_BATCH,
  SESSION_PURGE_BATCH,
  releaseJobSql,
  deferJobSql,
  completeJobSql,
  forgetJobSql,
  deadJobSql,
  unfollowedDeadResultsSql,
  retryJobSql,
  liveSessionSql,
  heldParams,
  assertNotErasing,
  ERASED_JOBS,
  ERASED_IDEMPOTENCY_KEYS,
  ERASED_VERDICT_STATUS,
  ERASED_COLUMNS,
  toSpentResumeToken,
  type SpentRow,
  inBatches,
  historyPurgeSql,
  expiredKeysPurgeSql,
  sweepLimit,
  tokenColumns,
  tokenLookup,
  idempotencyResponseEnc,
  idempotencyDone,
  toAudit,
  toJob,
  toSession,
  toSessionListing,
  toSessionState,
  sessionsDueSql,
  toStep,
  type AuditRow,
  type JobRow,
  type SessionRow,
  type StepRow,
} from './rows';
import type {
  AuditEntry,
  JobLease,
  RekeyBatch,
  RekeyCursor,
  Decision,
  IdempotencyClaim,
  IdempotencyRef,
  IdempotencyAnswer,
  InboxEvent,
  Job,
  JobState,
  ListSessionsQuery,
  NewJob,
  LaterRetry,
  NewSession,
  ResultsStatus,
  SessionListing,
  SessionRecord,
  SessionState,
  SpentResumeToken,
  StepRecord,
  Store,
  StoredResults,
  IncodeDeletionAt,
  SessionOrigin,
} from './types';

interface PendingWrite {
  fn: () => unknown;
  resolve: (v: any) => void;
  reject: (e: unknown) => void;
}

export interface SqliteStoreOptions {
  /** File path or ':memory:'. */
  filename: string;
  cipher: Cipher;
  /** normal (default): durable across process crashes in WAL mode; full: across power loss too, an fsync per commit. */
  synchronous?: 'normal' | 'full';
}

const IDEMPOTENCY_DONE = idempotencyDoneSql(sqliteArgs);
// Keeps a done claim's final answer (the claim's own completion again, on a done row only).
const IDEMPOTENCY_ANSWER = idempotencyDoneSql(sqliteArgs, "AND state = 'done'");
const ACTIVE_JOB = activeJobSql(sqliteArgs);

/** Rows read from a table the migrations may not have created yet: none when it is missing. */
function missingTableAsNone<T>(read: () => T[]): T[] {
  try {
    return read();
  } catch (err) {
    if (/no such table/.test((err as Error).message)) return [];
    throw err;
  }
}
const INSERT_NEW_JOB = `${INSERT_JOB} VALUES (?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?) ON CONFLICT DO NOTHING`;
/** A job, unless one with its dedupe key was done since (NewJob.unlessDoneSince). */
const INSERT_JOB_UNLESS_DONE = `${INSERT_JOB} SELECT ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ? WHERE NOT ${doneSinceSql('?', '?', '?')} ON CONFLICT DO NOTHING`;
const RECORD_STEP = recordStepSql(sqliteArgs);

const DUE = dueJobsSql({ now: '@now', limit: '@limit', subject: '@subject' });
/** Claims the earliest due jobs (dueJobsSql). Parameters by name: owner, exp, now, limit, subject. */
export const CLAIM_JOBS = `UPDATE jobs SET state = 'running', lease_owner = @owner, lease_expires_at = @exp, attempts = attempts + 1, updated_at = @now
  WHERE id IN (SELECT id FROM (SELECT * FROM (${DUE.queued}) UNION ALL SELECT * FROM (${DUE.lapsed})) ORDER BY ${CLAIM_ORDER} LIMIT @limit)
  RETURNING *`;
const JOBS_OF_KIND = jobsOfKindSql(sqliteArgs);
const WAKE_QUEUED_JOB = wakeQueuedJobSql(sqliteArgs);
const SET_RESULTS_STATUS = setResultsStatusSql({ id: '@id', status: '@status', lastError: '@lastError', now: '@now' }, 'MAX');

// A new session (with its resume token), and an existing one merged by the rules both engines share.
const INSERT_NEW_SESSION = `${sessionInsertSql('sqlite', { resume: true }).sql} ON CONFLICT (interview_id) DO NOTHING`;
const MERGE_SESSION = `${sessionInsertSql('sqlite', { resume: false, alias: 's' }).sql}
  ${sessionMergeSql('MAX')}
  RETURNING *`;

const HISTORY_PURGE = historyPurgeSql(sqliteArgs);
const EXPIRED_KEYS_PURGE = expiredKeysPurgeSql(sqliteArgs);
/** The sessions a retention batch erases (exported for the test of its query plan). Parameter: the cutoff. */
export const PURGE_DUE = `SELECT interview_id, origin FROM sessions WHERE created_at < ? AND results_status <> 'erased'
  ORDER BY created_at, interview_id LIMIT ${SESSION_PURGE_BATCH}`;
/** How long a write waits for another process's lock before the store answers "database unavailable". */
const BUSY_TIMEOUT_MS = 5000;
const RELEASE_JOB = releaseJobSql(sqliteArgs, 'MAX');
const DEFER_JOB = deferJobSql(sqliteArgs);
const COMPLETE_JOB = completeJobSql(sqliteArgs);
const FORGET_JOB = forgetJobSql(sqliteArgs);
const DEAD_JOB = deadJobSql(sqliteArgs);
const UNFOLLOWED_DEAD_RESULTS = unfollowedDeadResultsSql(sqliteArgs);
const RETRY_JOB = retryJobSql(sqliteArgs);
const LIVE_SESSION = liveSessionSql(sqliteArgs);
const SESSIONS_DUE = sessionsDueSql(sqliteArgs);

/**
 * mkdir -p, one directory at a time: Node 20's recursive mkdirSync spins for good (at full CPU, deaf to signals) on a
 * path it cannot create under some file systems (/proc/nope/db), where this fails with ENOENT naming the directory.
 */
function makeDirectories(dir: string): void {
  if (existsSync(dir)) return;
  const parent = dirname(dir);
  if (parent !== dir) makeDirectories(parent);
  try {
    mkdirSync(dir);
  } catch (err) {
    // Made meanwhile by another process opening the same database.
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

export class SqliteStore implements Store {
  readonly engine = 'sqlite' as const;
  /** The underlying handle, for tests and maintenance (checkpoints, backups). */
  readonly db: Db;
  private readonly cipher: Cipher;
  private readonly stmts = new Map<string, Statement>();

  constructor(opts: SqliteStoreOptions) {
    this.cipher = opts.cipher;
    if (opts.filename !== IN_MEMORY) makeDirectories(dirname(opts.filename));
    this.db = new Database(opts.filename);
    this.db.pragma('journal_mode = WAL');
    // NORMAL is durable across application crashes in WAL mode and is what makes >1k commits/s possible; FULL adds
    // an fsync per (group) commit for power loss and OS crashes.
    this.db.pragma(opts.synchronous === 'full' ? 'synchronous = FULL' : 'synchronous = NORMAL');
    this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    this.db.pragma('foreign_keys = ON');
    // Erased and re-encrypted values are zeroed where they were, not left in the file's free space, where the key
    // that still decrypts them (until a rotation retires it) would read them back. ON, not FAST: FAST leaves freed
    // overflow pages as they were, and OCR data is larger than a page. Only deletes and rewrites pay for it.
    this.db.pragma('secure_delete = ON');
  }

  private st(sql: string): Statement {
    let s = this.stmts.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.stmts.set(sql, s);
    }
    return s;
  }

  // Group commit: every write issued in one turn of the event loop shares one IMMEDIATE transaction (one
  // fsync-free WAL commit instead of one per write); one failing write still fails alone (see commit). A
  // write's promise settles only after the commit, so callers still ack durably.
  private readonly writes = new TurnBatch<PendingWrite>((batch) => this.commit(batch));

  private write<T>(fn: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => this.writes.add({ fn, resolve, reject }));
  }

  private commit(batch: PendingWrite[]): void {
    const rejectAll = (e: unknown) => batch.forEach((p) => p.reject(e));
    if (!this.db.open) return rejectAll(new Error('store is closed'));
    // Optimistic first: the whole batch with no savepoints (two fewer statements per write). If a write throws,
    // that transaction rolls back entirely and the batch runs again with one savepoint per write, so only the
    // failing one fails. Writes are closures over SQLite alone, so running one twice is safe. A failure of the
    // transaction itself (BEGIN IMMEDIATE timing out on a lock held by another process) fails the batch at once:
    // retrying would block the event loop for another busy_timeout.
    let failedWrite = false;
    const together = this.db.transaction(() =>
      batch.map((p) => {
        try {
          return p.fn();
        } catch (e) {
          failedWrite = true;
          throw e;
        }
      }),
    );
    try {
      const values = together.immediate();
      batch.forEach((p, i) => p.resolve(values[i]));
      return;
    } catch (e) {
      if (!failedWrite || batch.length === 1) return rejectAll(e);
    }
    const isolated = this.db.transaction(() =>
      batch.map((p): { ok: true; v: unknown } | { ok: false; e: unknown } => {
        try {
          return { ok: true, v: this.db.transaction(p.fn)() };
        } catch (e) {
          return { ok: false, e };
        }
      }),
    );
    try {
      isolated.immediate().forEach((o, i) => (o.ok ? batch[i].resolve(o.v) : batch[i].reject(o.e)));
    } catch (e) {
      rejectAll(e);
    }
  }

  async migrate(): Promise<void> {
    migrateSqlite(this.db);
    this.stmts.clear();
  }

  async close(): Promise<void> {
    this.writes.drain();
    if (this.db.open) this.db.close();
  }

  async ping(): Promise<void> {
    this.st('SELECT 1').get();
  }

  // ---- sessions

  private row(interviewId: string): SessionRow | undefined {
    return this.st('SELECT * FROM sessions WHERE interview_id = ?').get(interviewId) as SessionRow | undefined;
  }

  private rec(interviewId: string): SessionRecord | null {
    const r = this.row(interviewId);
    return r ? toSession(r, this.cipher) : null;
  }

  async upsertSession(s: NewSession): Promise<SessionRecord> {
    // Encrypted and hashed before the write: not while holding the write lock, and not again if the batch reruns.
    const v = sessionInsertValues(s, this.cipher);
    const done = s.idempotency && idempotencyResponseEnc(this.cipher, s.idempotency, s.interviewId);
    return this.write(() => {
      // The common case is a brand-new session: a plain insert, and the record is built from what we hold
      // (no RETURNING, no decrypting what we just encrypted).
      const step = s.firstStep;
      const fresh = this.st(INSERT_NEW_SESSION).run(v).changes;
      if (fresh) {
        if (s.idempotency) this.markIdempotencyDone(s.idempotency, s.interviewId, done as string);
        if (step) this.st(RECORD_STEP).run(...recordStepParams(s.interviewId, step));
        return freshSessionRecord(s, v);
      }
      // An existing row: merged by the rules both engines share; write() makes this and what follows one transaction.
      const r = this.st(MERGE_SESSION).get(v) as SessionRow | undefined;
      if (s.resume) this.setResume(s.interviewId, s.resume.tokenHash, s.resume.expiresAt);
      if (s.idempotency) this.markIdempotencyDone(s.idempotency, s.interviewId, done as string);
      if (step) this.st(RECORD_STEP).run(...recordStepParams(s.interviewId, step));
      return r ? toSession(r, this.cipher) : (this.rec(s.interviewId) as SessionRecord);
    });
  }

  async replaceToken(interviewId: string, token: string, now: number): Promise<boolean> {
    const t = tokenColumns(token, interviewId, this.cipher);
    return this.write(() => this.setToken(interviewId, t, now));
  }

  /** Inside a write: the session's token replaced (a new token is a sign of life), unless it was erased. */
  private setToken(interviewId: string, t: ReturnType<typeof tokenColumns>, now: number): boolean {
    return (
      this.st(
        `UPDATE sessions SET token_enc = ?, token_hash = ?, token_hash_indexed = ?, updated_at = MAX(updated_at, ?), active_at = MAX(COALESCE(active_at, 0), ?) WHERE interview_id = ? AND results_status <> 'erased'`,
      ).run(t.token_enc, t.token_hash, t.token_hash_indexed, now, now, interviewId).changes > 0
    );
  }

  async getSession(interviewId: string): Promise<SessionRecord | null> {
    return this.rec(interviewId);
  }

  async getSessionByToken(token: string): Promise<SessionRecord | null> {
    const { hash, namedId } = tokenLookup(token);
    const named = namedId === null ? undefined : this.row(namedId);
    const r =
      named && hashesEqual(named.token_hash, hash)
        ? named
        : (this.st('SELECT * FROM sessions WHERE token_hash = ? AND token_hash_indexed = 1 ORDER BY created_at DESC LIMIT 1').get(hash) as SessionRow | undefined);
    return r ? toSession(r, this.cipher) : null;
  }

  async advanceStatus(interviewId: string, status: string, rank: number, equalRankReplaces: boolean, now: number) {
    return this.write(() => {
      // Re-applying the very same status is not a change, so callers do not re-run side effects on repeats.
      const r = this.st(
        `UPDATE sessions SET onboarding_status = @status, status_rank = @rank, updated_at = MAX(updated_at + 1, @now), active_at = MAX(COALESCE(active_at, 0), @now)
         WHERE interview_id = @id AND results_status <> 'erased'
           AND (status_rank < @rank OR (status_rank = @rank AND @eq = 1 AND onboarding_status <> @status))
         RETURNING *`,
      ).get({ id: interviewId, status, rank, eq: equalRankReplaces ? 1 : 0, now }) as SessionRow | undefined;
      // State only, nothing decrypted: a value under a key no longer configured must not undo (here) what PostgreSQL
      // has committed by then, and the callers read no encrypted field.
      if (r) return { changed: true, session: toSessionState(r) };
      const cur = this.row(interviewId);
      return { changed: false, session: cur ? toSessionState(cur) : null };
    });
  }

  async setResultsStatus(interviewId: string, status: ResultsStatus | null, lastError: string | null, now: number, then?: NewJob): Promise<boolean> {
    assertNotErasing(status);
    const args = { status, lastError, now, id: interviewId };
    return this.write(() => {
      if (!then) return this.st(SET_RESULTS_STATUS).run(args).changes > 0;
      const before = (this.st('SELECT results_status FROM sessions WHERE interview_id = ?').get(interviewId) as { results_status: string } | undefined)?.results_status;
      const after = (this.st(`${SET_RESULTS_STATUS} RETURNING results_status`).get(args) as { results_status: string } | undefined)?.results_status;
      if (movedTo(status, before, after)) this.insertJob(then, now);
      return after !== undefined;
    });
  }

  async saveResults(interviewId: string, results: StoredResults, decision: Decision, now: number, then?: NewJob): Promise<boolean> {
    const scores = this.cipher.encryptJson(results.scores, aad.scores(interviewId));
    const ocr = this.cipher.encryptJson(results.ocr, aad.ocr(interviewId));
    return this.write(() => {
      const cur = this.st('SELECT results_status FROM sessions WHERE interview_id = ?').get(interviewId) as { results_status: string } | undefined;
      if (!cur) throw new Error('saveResults: unknown session');
      // A late results job must not bring PII back after an erasure.
      if (cur.results_status === 'erased') return false;
      const saved = this.st(`INSERT INTO results (interview_id, scores_enc, ocr_enc, key_id, fetched_at) VALUES (?, ?, ?, ?, ?) ${RESULTS_UPSERT_TAIL}`).run(interviewId, scores, ocr, this.cipher.primaryKeyId, results.fetchedAt);
      if (!saved.changes) return false;
      this.st(
        `UPDATE sessions SET results_status = 'ready', decision = ?, last_error = NULL, updated_at = MAX(updated_at + 1, ?), active_at = MAX(COALESCE(active_at, 0), ?) WHERE interview_id = ?`,
      ).run(decision, now, now, interviewId);
      const repeat = then && repeatsLatest(then, cur.results_status, () => this.st(JOBS_OF_KIND).all(then.subject, then.kind) as JobRow[]);
      if (then && !repeat) this.insertJob(then, now);
      else if (repeat && repeat.queued) this.st(WAKE_QUEUED_JOB).run(now, repeat.queued, now);
      return true;
    });
  }

  async resultsFetchedAt(interviewId: string): Promise<number | null> {
    const r = this.st('SELECT fetched_at FROM results WHERE interview_id = ?').get(interviewId) as { fetched_at: number } | undefined;
    return r ? Number(r.fetched_at) : null;
  }

  async getResults(interviewId: string): Promise<StoredResults | null> {
    const r = this.st('SELECT scores_enc, ocr_enc, fetched_at FROM results WHERE interview_id = ?').get(interviewId) as
      | { scores_enc: string; ocr_enc: string; fetched_at: number }
      | undefined;
    if (!r) return null;
    return {
      scores: this.cipher.decryptJson(r.scores_enc, aad.scores(interviewId)),
      ocr: this.cipher.decryptJson(r.ocr_enc, aad.ocr(interviewId)),
      fetchedAt: Number(r.fetched_at),
    };
  }

  async listSessions(q: ListSessionsQuery): Promise<{ items: SessionListing[]; nextCursor: string | null }> {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (cond: string, ...vals: unknown[]) => {
      where.push(cond);
      args.push(...vals);
    };
    if (q.onboardingStatus !== undefined) add('onboarding_status = ?', q.onboardingStatus);
    if (q.resultsStatus !== undefined) add('results_status = ?', q.resultsStatus);
    if (q.decision !== undefined) add('decision = ?', q.decision);
    if (q.since !== undefined) add('updated_at >= ?', q.since);
    if (q.until !== undefined) add('updated_at < ?', q.until);
    if (q.cursor !== undefined) {
      const c = decodeCursor(q.cursor);
      // A row value, which SQLite seeks in sessions_updated: written as an OR it scanned the index from the top, a cost
      // that grew with the page's depth.
      add('(updated_at, interview_id) < (?, ?)', c.updatedAt, c.interviewId);
    }
    const limit = clampLimit(q.limit);
    const sql = `SELECT * FROM sessions ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
                 ORDER BY updated_at DESC, interview_id DESC LIMIT ?`;
    const rows = this.st(sql).all(...args, limit + 1) as SessionRow[];
    const items = rows.slice(0, limit).map((r) => toSessionListing(r, this.cipher));
    return { items, nextCursor: rows.length > limit ? encodeCursor(items[items.length - 1]) : null };
  }

  async sessionsDueForPoll(now: number, limit: number): Promise<SessionState[]> {
    const rows = this.st(SESSIONS_DUE).all(now, clampLimit(limit)) as SessionRow[];
    return rows.map(toSessionState);
  }

  async stopPolling(interviewId: string, seen: number | null): Promise<boolean> {
    return this.write(() => this.st('UPDATE sessions SET next_poll_at = NULL WHERE interview_id = ? AND next_poll_at IS ?').run(interviewId, seen).changes > 0);
  }

  async schedulePoll(interviewId: string, nextPollAt: number | null, pollAttempts: number, seen?: number | null): Promise<void> {
    return this.write(() => {
      if (seen === undefined) this.st('UPDATE sessions SET next_poll_at = ?, poll_attempts = ? WHERE interview_id = ?').run(nextPollAt, pollAttempts, interviewId);
      else this.st('UPDATE sessions SET next_poll_at = ?, poll_attempts = ? WHERE interview_id = ? AND next_poll_at IS ?').run(nextPollAt, pollAttempts, interviewId, seen);
    });
  }

  async recordStep(interviewId: string, step: StepRecord): Promise<boolean> {
    return this.write(() => this.st(RECORD_STEP).run(...recordStepParams(interviewId, step)).changes > 0);
  }

  async listSteps(interviewId: string): Promise<StepRecord[]> {
    const rows = this.st('SELECT step, outcome, code, message, at FROM steps WHERE interview_id = ? ORDER BY id').all(interviewId) as StepRow[];
    return rows.map(toStep);
  }

  /**
   * Erases these sessions (results, token, customer id), each with an audit row without PII, in the order given; runs
   * inside a write. Returns how many rows changed.
   */
  private eraseIds(ids: string[], auditKind: string, detail: Record<string, unknown>, now: number): number {
    const list = JSON.stringify(ids);
    const each = 'SELECT value FROM json_each(?)';
    this.st(`INSERT INTO audit (kind, subject, detail, at) SELECT ?, value, ?, ? FROM json_each(?) ORDER BY key`).run(auditKind, JSON.stringify(detail), now, list);
    this.st(`DELETE FROM results WHERE interview_id IN (${each})`).run(list);
    this.sweepErased(list);
    return this.st(`UPDATE sessions SET ${ERASED_COLUMNS}, updated_at = MAX(updated_at + 1, ?) WHERE interview_id IN (${each})`).run(now, list).changes;
  }

  /**
   * What says how the checks of these sessions (a JSON list of ids) went (their steps, inbox events and job payloads),
   * and the request digests of the Idempotency-Keys that started them (which name the customer id).
   */
  private sweepErased(list: string): void {
    const each = 'SELECT value FROM json_each(?)';
    this.st(`DELETE FROM steps WHERE interview_id IN (${each})`).run(list);
    this.st(`DELETE FROM events WHERE interview_id IN (${each})`).run(list);
    this.st(`UPDATE jobs SET ${ERASED_JOBS} AND subject IN (${each})`).run(list);
    this.st(`UPDATE sessions SET ${ERASED_VERDICT_STATUS} AND interview_id IN (${each})`).run(list);
    this.st(`UPDATE idempotency_keys SET ${ERASED_IDEMPOTENCY_KEYS} AND interview_id IN (${each})`).run(list);
  }

  async eraseSession(interviewId: string, reason: string, now: number, incodeDeletionAt?: IncodeDeletionAt): Promise<boolean> {
    return this.write(() => {
      const row = this.st('SELECT results_status, origin, created_at FROM sessions WHERE interview_id = ?').get(interviewId) as { results_status: string; origin: SessionOrigin; created_at: number } | undefined;
      if (!row) return false;
      // Already erased: no second audit entry and no move in listings, but what arrived since (a webhook's event and
      // check) is swept again.
      if (row.results_status !== 'erased') this.eraseIds([interviewId], 'erasure', { reason }, now);
      else this.sweepErased(JSON.stringify([interviewId]));
      const at = incodeDeletionAt?.({ origin: row.origin, createdAt: Number(row.created_at) }) ?? null;
      if (at !== null) this.insertJob(erasureIncodeDeleteJob(interviewId, at, now), now);
      return true;
    });
  }

  async purgeExpired(createdBefore: number, now: number, signal?: AbortSignal, deleteAtIncode = false): Promise<number> {
    const limit = sweepLimit(signal);
    // In batches, each its own transaction: better-sqlite3 runs on the event loop, and one statement over a large
    // backlog would block it (and hold the file's write lock past other processes' busy_timeout) for seconds.
    // Selected once (through the sessions_purge_due index) and erased by id, in the same transaction.
    let n = 0;
    await inBatches(SESSION_PURGE_BATCH, async () => {
      // Counted after the write: a batch whose group commit reruns its closures must not count twice.
      const erased = await this.write(() => {
        const rows = this.st(PURGE_DUE).all(createdBefore) as { interview_id: string; origin: string }[];
        if (rows.length === 0) return 0;
        // Only sessions this service started: one created elsewhere is its owner's to delete at Incode.
        if (deleteAtIncode) for (const r of rows) if (r.origin === 'broker') this.insertJob(incodeDeleteJob(r.interview_id, now), now);
        return this.eraseIds(rows.map((r) => r.interview_id), 'retention-purge', { reason: 'retention', createdBefore }, now);
      });
      n += erased;
      return erased;
    }, limit);
    // Housekeeping of short-lived secrets rides along with the retention sweep (an expired resume token is refused at
    // lookup and cleared with its session). Finished jobs and processed webhook events older than the retention are
    // history nobody reads: without this the tables (and the queue-depth count behind /metrics) only ever grow.
    await inBatches(PURGE_BATCH, () => this.write(() => this.st(EXPIRED_KEYS_PURGE).run(now, PURGE_BATCH).changes), limit);
    for (const sql of HISTORY_PURGE) await inBatches(PURGE_BATCH, () => this.write(() => this.st(sql).run(createdBefore, PURGE_BATCH).changes), limit);
    return n;
  }

  async truncateLog(): Promise<boolean> {
    // The WAL keeps every page version written since it was last reset, erased values included, until later frames
    // happen to overwrite them; TRUNCATE copies what is current into the database file and empties the WAL. Not waiting
    // on another process (its reader would hold this event loop for the whole busy timeout): the next sweep tries again.
    this.db.pragma('busy_timeout = 0');
    try {
      const [r] = this.db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
      return r.busy === 0;
    } finally {
      this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    }
  }

  async reencryptBatch(cursor: RekeyCursor, limit: number): Promise<RekeyBatch> {
    return reencryptBatch(this.cipher, cursor, limit, {
      // Read outside the write lock (at once, as the batch is asked for).
      read: async (t, params, after) => this.st(rekeySelectSql(t, sqliteArgs, this.cipher.primaryPrefix, after)).all(...params) as Record<string, string | null>[],
      write: (t, changed) => {
        const update = this.st(rekeyUpdateSqlite(t));
        return this.write(() => changed.reduce((n, r) => n + (update.run(rekeyUpdateNamed(t, r)).changes ? r.reencrypted : 0), 0));
      },
    });
  }

  async keyFingerprints(): Promise<Map<string, string>> {
    // Read before the migrations too, on a database that may not have the table yet (none recorded then).
    const rows = missingTableAsNone(() => this.db.prepare('SELECT key_id, fingerprint FROM encryption_keys').all() as { key_id: string; fingerprint: string }[]);
    return new Map(rows.map((r) => [r.key_id, r.fingerprint]));
  }

  async recordKeyFingerprint(keyId: string, fingerprint: string, now: number): Promise<string> {
    return this.write(() => {
      this.st('INSERT INTO encryption_keys (key_id, fingerprint, created_at) VALUES (?, ?, ?) ON CONFLICT (key_id) DO NOTHING').run(keyId, fingerprint, now);
      return (this.st('SELECT fingerprint FROM encryption_keys WHERE key_id = ?').get(keyId) as { fingerprint: string }).fingerprint;
    });
  }

  async sampleCiphertexts(keyId: string): Promise<{ value: string; aad: string }[]> {
    return keySamples(sqliteArgs, keyId).flatMap(({ sql, prefix, sampled }) => {
      const [row] = missingTableAsNone(() => [this.db.prepare(sql).get(prefix) as Record<string, unknown> | undefined]);
      return row ? [sampled(row)] : [];
    });
  }

  // ---- inbox and jobs

  private insertJob(j: NewJob, now: number): boolean {
    const args = [newId(), j.kind, j.subject, jsonText(j.payload), j.runAt, j.dedupeKey ?? null, now, now];
    if (j.unlessDoneSince !== undefined && j.dedupeKey !== undefined)
      return this.st(INSERT_JOB_UNLESS_DONE).run(...args, j.subject, j.dedupeKey, j.unlessDoneSince).changes > 0;
    return this.st(INSERT_NEW_JOB).run(...args).changes > 0;
  }

  async recordEvent(e: InboxEvent, job: NewJob): Promise<boolean> {
    return this.write(() => {
      const inserted = this.st(
        `INSERT INTO events (key, interview_id, onboarding_status, payload, received_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING`,
      ).run(e.key, e.interviewId, e.onboardingStatus, jsonText(e.payload), e.receivedAt).changes;
      if (!inserted) return false;
      this.insertJob(job, e.receivedAt);
      return true;
    });
  }

  async markEventProcessed(key: string, now: number): Promise<void> {
    return this.write(() => {
      this.st('UPDATE events SET processed_at = ? WHERE key = ?').run(now, key);
    });
  }

  async hasEvent(key: string): Promise<boolean> {
    return this.st('SELECT 1 FROM events WHERE key = ?').get(key) !== undefined;
  }

  async enqueueJob(j: NewJob, now: number): Promise<boolean> {
    return this.write(() => {
      return this.insertJob(j, now);
    });
  }

  async claimJobs(owner: string, limit: number, leaseMs: number, now: number, subject?: string): Promise<Job[]> {
    const rows = await this.write(() => this.st(CLAIM_JOBS).all({ owner, exp: now + leaseMs, now, limit: clampLimit(limit), subject: subject ?? null }) as JobRow[]);
    return rows.map(toJob).sort(byRunAt);
  }

  async completeJob(job: JobLease, owner: string, now: number, forget = false): Promise<boolean> {
    return this.write(() => (forget ? this.st(FORGET_JOB).run(...heldParams(job, owner)) : this.st(COMPLETE_JOB).run(now, ...heldParams(job, owner))).changes > 0);
  }

  async failJob(job: JobLease, owner: string, errorCode: string, retryAt: number | null, now: number, then?: LaterRetry): Promise<boolean> {
    return this.write(() => {
      if (retryAt === null) {
        const dead = this.st(DEAD_JOB).run(errorCode, now, ...heldParams(job, owner)).changes > 0;
        if (!dead) return false;
        // In the same write: released later, a redelivery in between would be acked as a duplicate and then forgotten.
        this.st(`DELETE FROM events WHERE key = (SELECT json_extract(payload, '$.eventKey') FROM jobs WHERE id = ?) AND processed_at IS NULL`).run(job.id);
        if (then && (!then.whileLive || this.st(LIVE_SESSION).get(then.subject))) this.insertJob(then, now);
        return true;
      }
      return this.st(RETRY_JOB).run(errorCode, retryAt, now, ...heldParams(job, owner)).changes > 0;
    });
  }

  async releaseJob(job: JobLease, owner: string, now: number): Promise<boolean> {
    // sqliteArgs numbers nothing: now appears twice, so it is bound twice.
    return this.write(() => this.st(RELEASE_JOB).run(now, now, ...heldParams(job, owner)).changes > 0);
  }

  async deferJob(job: JobLease, owner: string, runAt: number, now: number): Promise<boolean> {
    return this.write(() => this.st(DEFER_JOB).run(runAt, now, ...heldParams(job, owner)).changes > 0);
  }

  async countJobs(opts: { done?: boolean } = {}): Promise<Record<JobState, number>> {
    const counts = emptyCounts();
    for (const r of this.st(countJobsSql(opts.done !== false)).all() as { state: JobState; n: number }[]) {
      if (r.state in counts) counts[r.state] = Number(r.n);
    }
    return counts;
  }

  async listJobs(subject: string): Promise<Job[]> {
    return (this.st('SELECT * FROM jobs WHERE subject = ? ORDER BY created_at, run_at, id').all(subject) as JobRow[]).map(toJob);
  }

  async unfollowedDeadResults(since: number, before: number, limit: number): Promise<Job[]> {
    return (this.st(UNFOLLOWED_DEAD_RESULTS).all(since, before, limit) as JobRow[]).map(toJob);
  }

  async activeJob(dedupeKey: string): Promise<Job | null> {
    const r = this.st(ACTIVE_JOB).get(dedupeKey) as JobRow | undefined;
    return r ? toJob(r) : null;
  }

  // ---- audit

  async audit(kind: string, subject: string, detail: Record<string, unknown>, now: number): Promise<void> {
    return this.write(() => {
      this.st('INSERT INTO audit (kind, subject, detail, at) VALUES (?, ?, ?, ?)').run(kind, subject, jsonText(detail), now);
    });
  }

  async listAudit(subject?: string): Promise<AuditEntry[]> {
    const rows = (
      subject === undefined ? this.st('SELECT * FROM audit ORDER BY id').all() : this.st('SELECT * FROM audit WHERE subject = ? ORDER BY id').all(subject)
    ) as AuditRow[];
    return rows.map(toAudit);
  }

  // ---- idempotency keys and resume tokens

  async claimIdempotencyKey(scope: string, key: string, requestHash: string, expiresAt: number, now: number): Promise<IdempotencyClaim> {
    return this.write(() => {
      // An expired key is taken over as if it never existed.
      const claimed = this.st(
        `INSERT INTO idempotency_keys (scope, key, request_hash, response_enc, state, expires_at, created_at)
         VALUES (@scope, @key, @hash, NULL, 'pending', @exp, @now)
         ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash, response_enc = NULL, state = 'pending', interview_id = NULL,
           expires_at = excluded.expires_at, created_at = excluded.created_at
         WHERE idempotency_keys.expires_at <= @now`,
      ).run({ scope, key, hash: requestHash, exp: expiresAt, now }).changes;
      if (claimed) return { state: 'new' } as const;
      const r = this.st('SELECT request_hash, response_enc, state FROM idempotency_keys WHERE scope = ? AND key = ?').get(scope, key) as {
        request_hash: string;
        response_enc: string | null;
        state: string;
      };
      if (r.state === 'done') return idempotencyDone(this.cipher, scope, key, r.request_hash, r.response_enc!);
      if (r.state === 'erased') return { state: 'erased' } as const;
      return { state: 'pending', requestHash: r.request_hash } as const;
    });
  }

  private markIdempotencyDone(idem: IdempotencyRef, interviewId: string, responseEnc: string): void {
    // This claim only: a retry that took the key over after the lease owns it now.
    this.st(IDEMPOTENCY_DONE).run(responseEnc, idem.expiresAt, interviewId, idem.scope, idem.key, idem.claimedAt);
  }

  async recordIdempotencyAnswer(idem: IdempotencyRef, interviewId: string, answer: IdempotencyAnswer): Promise<void> {
    const enc = idempotencyResponseEnc(this.cipher, idem, interviewId, answer);
    return this.write(() => {
      this.st(IDEMPOTENCY_ANSWER).run(enc, idem.expiresAt, interviewId, idem.scope, idem.key, idem.claimedAt);
    });
  }

  async releaseIdempotencyKey(scope: string, key: string, claimedAt: number): Promise<void> {
    return this.write(() => {
      this.st(`DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND created_at = ? AND state = 'pending'`).run(scope, key, claimedAt);
    });
  }

  // One active resume token per session, kept on its row: a new one replaces (and so revokes) the previous.
  private setResume(interviewId: string, tokenHash: string, expiresAt: number): boolean {
    return this.st(`UPDATE sessions SET resume_token_hash = ?, resume_expires_at = ? WHERE interview_id = ? AND results_status <> 'erased'`).run(tokenHash, expiresAt, interviewId).changes > 0;
  }

  async createResumeToken(tokenHash: string, interviewId: string, expiresAt: number, newToken?: { token: string; now: number }): Promise<boolean> {
    if (!newToken) return this.write(() => this.setResume(interviewId, tokenHash, expiresAt));
    const t = tokenColumns(newToken.token, interviewId, this.cipher);
    // One transaction: the token and the resume token are kept together or not at all.
    return this.write(() => this.setToken(interviewId, t, newToken.now) && this.setResume(interviewId, tokenHash, expiresAt));
  }

  async checkResumeToken(interviewId: string, tokenHash: string, now: number): Promise<boolean> {
    const r = this.st('SELECT resume_token_hash FROM sessions WHERE interview_id = ? AND resume_expires_at > ?').get(interviewId, now) as
      | { resume_token_hash: string | null }
      | undefined;
    return isResumeHash(tokenHash) && hashesEqual(r?.resume_token_hash, tokenHash);
  }

  async consumeResumeToken(interviewId: string, tokenHash: string, now: number, heldUntil: number): Promise<SpentResumeToken | null> {
    // Read, compare in constant time and mark spent in one write transaction: of concurrent spends, one wins.
    return this.write(() => {
      const r = this.st(
        `SELECT resume_token_hash, resume_expires_at, created_at, onboarding_status, configuration_id, results_status, last_error FROM sessions WHERE interview_id = ? AND resume_expires_at > ? AND results_status <> 'erased'`,
      ).get(interviewId, now) as (SpentRow & { resume_token_hash: string | null }) | undefined;
      if (!r || !resumeSpendable(r.resume_token_hash, tokenHash, now)) return null;
      this.st('UPDATE sessions SET resume_token_hash = ? WHERE interview_id = ?').run(spentResumeMarker(tokenHash, heldUntil), interviewId);
      return toSpentResumeToken(r, heldUntil);
    });
  }

  async restoreResumeToken(interviewId: string, tokenHash: string, expiresAt: number, heldUntil: number): Promise<void> {
    return this.write(() => {
      this.st(`UPDATE sessions SET resume_token_hash = ?, resume_expires_at = ? WHERE interview_id = ? AND resume_token_hash = ? AND results_status <> 'erased'`).run(
        tokenHash,
        expiresAt,
        interviewId,
        spentResumeMarker(tokenHash, heldUntil),
      );
    });
  }
}
