// Store over a pg Pool: single-statement atomic updates, SKIP LOCKED job claims, optional per-store schema (search_path per connection).
import { Pool, type PoolClient, type QueryResultRow } from 'pg';
import { Cipher, hashesEqual } from './crypto';
import { migratePostgres, quoteIdent } from './migrations';
import { splitPgOptions } from './url';
import { connectionSound, isDatabaseUnavailable, watchCheckedOut } from './unavailable';
import { keySamples } from './key-check';
import { reencryptBatch, rekeySelectSql, rekeyUpdateParams, rekeyUpdatePostgres } from './rekey';
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
  ERASURE_FENCE,
  liveSessionSql,
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
  pgArgs,
  setResultsStatusSql,
  RESULTS_UPSERT_TAIL,
  newId,
  erasureIncodeDeleteJob,
  incodeDeleteJob,
  freshSessionRecord,
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

export interface PostgresStoreOptions {
  url: string;
  cipher: Cipher;
  /** Pool size (default 10). */
  poolMax?: number;
  /** Schema holding the tables (default 'public'); created by migrate(). Lowercase identifier. */
  schema?: string;
  /** Sessions the retention purge erases per transaction (default 2,000), so each stays well inside the statement timeout. */
  purgeBatch?: number;
  /** Errors of idle pooled connections (the pool drops the client); without it they are ignored rather than crashing the process. */
  onPoolError?: (err: Error) => void;
  /**
   * Bound in ms on getting a connection (new or pooled) and on each statement, client and server side (default
   * 10000), so a stalled database fails requests and readiness instead of holding them forever.
   */
  timeoutMs?: number;
}

type Queryable = Pick<PoolClient, 'query'>;

// Statements that run alone and inside one-statement CTEs; `p` is the number of their first parameter, `when` an
// extra condition (the CTE's "only if the row before it was new").



/** A session row locked for erasure, and whether this service started it. */
interface LockedSession {
  interview_id: string;
  origin: string;
  /** Only where the lock asks for it (an erasure that may delete at Incode). */
  created_at?: string | number;
}

/** Rows read from a table the migrations may not have created yet (42P01: undefined table): none when it is missing. */
async function missingTableAsNone<T>(read: () => Promise<T[]>): Promise<T[]> {
  try {
    return await read();
  } catch (err) {
    if ((err as { code?: unknown }).code === '42P01') return [];
    throw err;
  }
}

/** Queues a job unless an active one has its dedupe key (no conflict target: covers the partial unique index). */
function queuedJobSql(p: number, when = ''): string {
  return `${INSERT_JOB}
    SELECT $${p}, $${p + 1}, $${p + 2}, $${p + 3}::jsonb, 'queued', 0, $${p + 4}::bigint, $${p + 5}, $${p + 6}::bigint, $${p + 6}::bigint ${when}
    ON CONFLICT DO NOTHING`;
}

function queuedJobParams(j: NewJob, now: number): unknown[] {
  return [newId(), j.kind, j.subject, jsonText(j.payload), j.runAt, j.dedupeKey ?? null, now];
}

/** Several jobs in one statement (one array per column), each skipped if an active one has its dedupe key. */
const QUEUED_JOBS = `${INSERT_JOB}
  SELECT j.id, j.kind, j.subject, j.payload::jsonb, 'queued', 0, j.run_at, j.dedupe_key, $7::bigint, $7::bigint
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[]) AS j(id, kind, subject, payload, run_at, dedupe_key)
  ON CONFLICT DO NOTHING`;

function queuedJobsParams(jobs: NewJob[], now: number): unknown[] {
  return [jobs.map(() => newId()), jobs.map((j) => j.kind), jobs.map((j) => j.subject), jobs.map((j) => jsonText(j.payload)), jobs.map((j) => j.runAt), jobs.map((j) => j.dedupeKey ?? null), now];
}

// A new session with its resume token and the Idempotency-Key it completes: one statement, one round trip, one commit.
const NEW_ROW = sessionInsertSql('pg', { resume: true });
const INSERT_NEW_SESSION = `WITH ins AS (
    ${NEW_ROW.sql}
    ON CONFLICT (interview_id) DO NOTHING RETURNING interview_id
  ), done AS (
    ${idempotencyDoneSql(pgArgs(NEW_ROW.next), 'AND EXISTS (SELECT 1 FROM ins)')}
  )
  SELECT (SELECT count(*) FROM ins)::int AS inserted`;
const MERGED_ROW = sessionInsertSql('pg', { resume: false, alias: 's' });
const MERGE_SESSION = `${MERGED_ROW.sql}
  ${sessionMergeSql('GREATEST')}
  RETURNING *`;

const HISTORY_PURGE = historyPurgeSql(pgArgs(1));
const UNFOLLOWED_DEAD_RESULTS = unfollowedDeadResultsSql(pgArgs(1));
const EXPIRED_KEYS_PURGE = expiredKeysPurgeSql(pgArgs(1));
const RELEASE_JOB = releaseJobSql(pgArgs(1), 'GREATEST');
const DEFER_JOB = deferJobSql(pgArgs(1));
const COMPLETE_JOB = completeJobSql(pgArgs(1));
const FORGET_JOB = forgetJobSql(pgArgs(1));
/** A dead letter, its unprocessed inbox event released, and with `retry` the later retry it queues: one statement. */
const deadJobPgSql = (retry: boolean) => `WITH d AS (${deadJobSql(pgArgs(1))} RETURNING payload),
  e AS (DELETE FROM events WHERE key = (SELECT payload->>'eventKey' FROM d) AND processed_at IS NULL)${retry ? `,
  n AS (${queuedJobSql(6, 'WHERE EXISTS (SELECT 1 FROM d)')})` : ''}
  SELECT 1 FROM d`;
const DEAD_JOB = deadJobPgSql(false);
const DEAD_JOB_THEN = deadJobPgSql(true);
// A `whileLive` retry's session, locked against an erasure (which waits for it, or is waited for and then seen).
const LIVE_SESSION_FENCE = liveSessionSql(pgArgs(1), ERASURE_FENCE);
const RETRY_JOB = retryJobSql(pgArgs(1));
const SESSIONS_DUE = sessionsDueSql(pgArgs(1));
// Keeps a done claim's final answer (the claim's own completion again, on a done row only).
const IDEMPOTENCY_ANSWER = idempotencyDoneSql(pgArgs(1), "AND state = 'done'");
const ACTIVE_JOB_SQL = activeJobSql(pgArgs(1));
const RECORD_STEP_SQL = recordStepSql(pgArgs(1), ERASURE_FENCE);
const CLAIM_DUE = dueJobsSql({ now: '$1::bigint', limit: '$2::int', subject: '$5::text' }, ' FOR UPDATE SKIP LOCKED');
const JOBS_OF_KIND_SQL = jobsOfKindSql(pgArgs(1));
const WAKE_QUEUED_JOB_SQL = wakeQueuedJobSql(pgArgs(1));
const SET_RESULTS_STATUS_SQL = setResultsStatusSql({ id: '$1', status: '$2', lastError: '$3', now: '$4::bigint' }, 'GREATEST');

export class PostgresStore implements Store {
  readonly engine = 'postgres' as const;
  readonly pool: Pool;
  readonly schema: string;
  private readonly cipher: Cipher;
  private readonly purgeBatch: number;

  constructor(opts: PostgresStoreOptions) {
    this.cipher = opts.cipher;
    this.purgeBatch = opts.purgeBatch ?? SESSION_PURGE_BATCH;
    this.schema = opts.schema ?? 'public';
    quoteIdent(this.schema);
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const { url, options } = splitPgOptions(opts.url);
    this.pool = new Pool({
      connectionString: url,
      max: opts.poolMax ?? 10,
      // Set at connection start-up, so no query can ever run against another schema; after the URL's own options, if
      // any, so that none of them can move it (migrations pin it too: the two would disagree).
      options: `${options ? `${options} ` : ''}-c search_path=${this.schema}`,
      // Covers both a connect that never completes and the wait for a free client when every one is stuck.
      connectionTimeoutMillis: timeoutMs,
      // Server side: a slow statement is cancelled cleanly and its locks released. Client side, a little later: the
      // only bound when the network, not the server, stalls (a timed-out pool.query discards its connection).
      statement_timeout: timeoutMs,
      query_timeout: timeoutMs + 1000,
    });
    this.pool.on('error', (err) => opts.onPoolError?.(err));
  }

  private async q<R extends QueryResultRow>(sql: string, args: unknown[] = [], c: Queryable = this.pool) {
    return c.query<R>(sql, args);
  }

  private async tx<T>(fn: (c: PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    const watch = watchCheckedOut(c);
    let broken: Error | undefined;
    try {
      await c.query('BEGIN');
      const out = await fn(c);
      await c.query('COMMIT');
      return out;
    } catch (err) {
      // A connection lost between statements is what the transaction failed of.
      const failure = watch.lost ?? err;
      // A client whose statement timed out or lost its connection is not reused: a ROLLBACK would queue behind the
      // stuck statement for another whole timeout, and the pool would hand the dead client out again. Destroyed
      // (release with an error), its transaction is rolled back by the server.
      // A deadlock or serialization failure leaves the connection sound: rolled back and reused like any failure.
      if (watch.lost || (isDatabaseUnavailable(err) && !connectionSound(err))) broken = failure as Error;
      else await c.query('ROLLBACK').catch((e: unknown) => (broken = e as Error));
      throw failure;
    } finally {
      // Lost after its last statement answered (a COMMIT that went through): still not handed out again.
      watch.release(broken);
    }
  }

  async migrate(): Promise<void> {
    await migratePostgres(this.pool, this.schema);
  }

  async connectedAsSuperuser(): Promise<boolean> {
    // The login's, not the role it may set (a superuser login can always set itself back).
    const { rows } = await this.pool.query<{ rolsuper: boolean }>('SELECT rolsuper FROM pg_roles WHERE rolname = session_user');
    return rows[0]?.rolsuper === true;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  async ping(): Promise<void> {
    await this.q('SELECT 1');
  }

  // ---- sessions

  private async rec(interviewId: string, c: Queryable = this.pool): Promise<SessionRecord | null> {
    const { rows } = await this.q<SessionRow>('SELECT * FROM sessions WHERE interview_id = $1', [interviewId], c);
    return rows[0] ? toSession(rows[0], this.cipher) : null;
  }

  async upsertSession(s: NewSession): Promise<SessionRecord> {
    const v = sessionInsertValues(s, this.cipher);
    // A first step goes in the same transaction (a server-side onboarding's start, off POST /session's path).
    const step = s.firstStep;
    if (step)
      return this.tx(async (c) => {
        const r = await this.upsertWith(s, v, c);
        await this.q(RECORD_STEP_SQL, recordStepParams(s.interviewId, step), c);
        return r;
      });
    return this.upsertWith(s, v);
  }

  private async upsertWith(s: NewSession, v: ReturnType<typeof sessionInsertValues>, c?: Queryable): Promise<SessionRecord> {
    // The common case, a brand-new session, is one statement (one round trip, one commit): the row with its resume
    // token and, when an Idempotency-Key created it, that key marked done. An existing row takes the path below.
    const idem = s.idempotency;
    const { rows: fresh } = await this.q<{ inserted: number }>(
      INSERT_NEW_SESSION,
      [
        ...NEW_ROW.keys.map((k) => v[k]),
        // Without a key the UPDATE matches no row (scope and key NULL).
        ...(idem ? this.idempotencyDoneParams(idem, s.interviewId) : [null, null, null, null, null, null]),
      ],
      c,
    );
    if (fresh[0].inserted) return freshSessionRecord(s, v);
    // An existing row (the insert above found it): merged by the rules both engines share, then its resume token and
    // the Idempotency-Key it completes, in one transaction (the caller's, when it has one).
    const merge = async (t: Queryable) => {
      const { rows } = await this.q<SessionRow>(MERGE_SESSION, MERGED_ROW.keys.map((k) => v[k]), t);
      if (s.resume) await this.setResume(s.interviewId, s.resume.tokenHash, s.resume.expiresAt, t);
      if (s.idempotency) await this.q(idempotencyDoneSql(pgArgs(1)), this.idempotencyDoneParams(s.idempotency, s.interviewId), t);
      return rows[0] ? toSession(rows[0], this.cipher) : ((await this.rec(s.interviewId, t)) as SessionRecord);
    };
    return c ? merge(c) : this.tx(merge);
  }

  async replaceToken(interviewId: string, token: string, now: number): Promise<boolean> {
    return this.setToken(interviewId, tokenColumns(token, interviewId, this.cipher), now);
  }

  /** The session's token replaced (a new token is a sign of life), unless it was erased. */
  private async setToken(interviewId: string, t: ReturnType<typeof tokenColumns>, now: number, c: Queryable = this.pool): Promise<boolean> {
    const { rowCount } = await this.q(
      `UPDATE sessions SET token_enc = $2, token_hash = $3, token_hash_indexed = $5::smallint, updated_at = GREATEST(updated_at, $4::bigint),
         active_at = GREATEST(COALESCE(active_at, 0), $4::bigint)
       WHERE interview_id = $1 AND results_status <> 'erased'`,
      [interviewId, t.token_enc, t.token_hash, now, t.token_hash_indexed],
      c,
    );
    return (rowCount ?? 0) > 0;
  }

  async getSession(interviewId: string): Promise<SessionRecord | null> {
    return this.rec(interviewId);
  }

  async getSessionByToken(token: string): Promise<SessionRecord | null> {
    const { hash, namedId } = tokenLookup(token);
    if (namedId !== null) {
      const { rows } = await this.q<SessionRow>('SELECT * FROM sessions WHERE interview_id = $1', [namedId]);
      if (rows[0] && hashesEqual(rows[0].token_hash, hash)) return toSession(rows[0], this.cipher);
    }
    const { rows } = await this.q<SessionRow>('SELECT * FROM sessions WHERE token_hash = $1 AND token_hash_indexed = 1 ORDER BY created_at DESC LIMIT 1', [hash]);
    return rows[0] ? toSession(rows[0], this.cipher) : null;
  }

  async advanceStatus(interviewId: string, status: string, rank: number, equalRankReplaces: boolean, now: number) {
    // Row lock + re-evaluated WHERE make concurrent advances serialize (and one racing an erasure sees it erased);
    // repeating the same status is not a change.
    const { rows } = await this.q<SessionRow>(
      `UPDATE sessions SET onboarding_status = $2, status_rank = $3::int, updated_at = GREATEST(updated_at + 1, $5::bigint),
         active_at = GREATEST(COALESCE(active_at, 0), $5::bigint)
       WHERE interview_id = $1 AND results_status <> 'erased'
         AND (status_rank < $3::int OR (status_rank = $3::int AND $4::boolean AND onboarding_status <> $2))
       RETURNING *`,
      [interviewId, status, rank, equalRankReplaces, now],
    );
    // State only, nothing decrypted (as on SQLite): the callers read no encrypted field.
    if (rows[0]) return { changed: true, session: toSessionState(rows[0]) };
    const cur = await this.q<SessionRow>('SELECT * FROM sessions WHERE interview_id = $1', [interviewId]);
    return { changed: false, session: cur.rows[0] ? toSessionState(cur.rows[0]) : null };
  }

  async setResultsStatus(interviewId: string, status: ResultsStatus | null, lastError: string | null, now: number, then?: NewJob): Promise<boolean> {
    assertNotErasing(status);
    if (!then || status === null) return ((await this.q(SET_RESULTS_STATUS_SQL, [interviewId, status, lastError, now])).rowCount ?? 0) > 0;
    return this.tx(async (c) => {
      const { rows } = await this.q<{ results_status: string }>('SELECT results_status FROM sessions WHERE interview_id = $1 FOR UPDATE', [interviewId], c);
      if (!rows[0]) return false;
      const after = await this.q<{ results_status: string }>(`${SET_RESULTS_STATUS_SQL} RETURNING results_status`, [interviewId, status, lastError, now], c);
      if (movedTo(status, rows[0].results_status, after.rows[0]?.results_status)) await this.q(queuedJobSql(1), queuedJobParams(then, now), c);
      return after.rows.length > 0;
    });
  }

  async saveResults(interviewId: string, results: StoredResults, decision: Decision, now: number, then?: NewJob): Promise<boolean> {
    const scores = this.cipher.encryptJson(results.scores, aad.scores(interviewId));
    const ocr = this.cipher.encryptJson(results.ocr, aad.ocr(interviewId));
    return this.tx(async (c) => {
      // FOR UPDATE serializes against a concurrent erasure of the same session.
      const { rows } = await this.q<{ results_status: string }>('SELECT results_status FROM sessions WHERE interview_id = $1 FOR UPDATE', [interviewId], c);
      if (!rows[0]) throw new Error('saveResults: unknown session');
      // A late results job must not bring PII back after an erasure.
      if (rows[0].results_status === 'erased') return false;
      const saved = await this.q(
        `INSERT INTO results (interview_id, scores_enc, ocr_enc, key_id, fetched_at) VALUES ($1, $2, $3, $4, $5::bigint) ${RESULTS_UPSERT_TAIL}`,
        [interviewId, scores, ocr, this.cipher.primaryKeyId, results.fetchedAt],
        c,
      );
      if (!saved.rowCount) return false;
      await this.q(
        `UPDATE sessions SET results_status = 'ready', decision = $2, last_error = NULL, updated_at = GREATEST(updated_at + 1, $3::bigint),
           active_at = GREATEST(COALESCE(active_at, 0), $3::bigint)
         WHERE interview_id = $1`,
        [interviewId, decision, now],
        c,
      );
      // repeatsLatest reads no jobs over a failure, so none are fetched for it.
      const earlier = then?.unlessRepeat && rows[0].results_status !== 'failed' ? (await this.q<JobRow>(JOBS_OF_KIND_SQL, [then.subject, then.kind], c)).rows : [];
      const repeat = then && repeatsLatest(then, rows[0].results_status, () => earlier);
      if (then && !repeat) await this.q(queuedJobSql(1), queuedJobParams(then, now), c);
      else if (repeat && repeat.queued) await this.q(WAKE_QUEUED_JOB_SQL, [now, repeat.queued, now], c);
      return true;
    });
  }

  async resultsFetchedAt(interviewId: string): Promise<number | null> {
    const { rows } = await this.q<{ fetched_at: string }>('SELECT fetched_at FROM results WHERE interview_id = $1', [interviewId]);
    return rows[0] ? Number(rows[0].fetched_at) : null;
  }

  async getResults(interviewId: string): Promise<StoredResults | null> {
    const { rows } = await this.q<{ scores_enc: string; ocr_enc: string; fetched_at: string }>(
      'SELECT scores_enc, ocr_enc, fetched_at FROM results WHERE interview_id = $1',
      [interviewId],
    );
    const r = rows[0];
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
    const p = (v: unknown) => {
      args.push(v);
      return `$${args.length}`;
    };
    if (q.onboardingStatus !== undefined) where.push(`onboarding_status = ${p(q.onboardingStatus)}`);
    if (q.resultsStatus !== undefined) where.push(`results_status = ${p(q.resultsStatus)}`);
    if (q.decision !== undefined) where.push(`decision = ${p(q.decision)}`);
    if (q.since !== undefined) where.push(`updated_at >= ${p(q.since)}::bigint`);
    if (q.until !== undefined) where.push(`updated_at < ${p(q.until)}::bigint`);
    if (q.cursor !== undefined) {
      const c = decodeCursor(q.cursor);
      where.push(`(updated_at, interview_id) < (${p(c.updatedAt)}::bigint, ${p(c.interviewId)}::text)`);
    }
    const limit = clampLimit(q.limit);
    const { rows } = await this.q<SessionRow>(
      `SELECT * FROM sessions ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
       ORDER BY updated_at DESC, interview_id DESC LIMIT ${p(limit + 1)}::int`,
      args,
    );
    const items = rows.slice(0, limit).map((r) => toSessionListing(r, this.cipher));
    return { items, nextCursor: rows.length > limit ? encodeCursor(items[items.length - 1]) : null };
  }

  async sessionsDueForPoll(now: number, limit: number): Promise<SessionState[]> {
    const { rows } = await this.q<SessionRow>(SESSIONS_DUE, [now, clampLimit(limit)]);
    return rows.map(toSessionState);
  }

  async stopPolling(interviewId: string, seen: number | null): Promise<boolean> {
    const { rowCount } = await this.q('UPDATE sessions SET next_poll_at = NULL WHERE interview_id = $1 AND next_poll_at IS NOT DISTINCT FROM $2::bigint', [interviewId, seen]);
    return (rowCount ?? 0) > 0;
  }

  async schedulePoll(interviewId: string, nextPollAt: number | null, pollAttempts: number, seen?: number | null): Promise<void> {
    if (seen === undefined) await this.q('UPDATE sessions SET next_poll_at = $2::bigint, poll_attempts = $3::int WHERE interview_id = $1', [interviewId, nextPollAt, pollAttempts]);
    else
      await this.q('UPDATE sessions SET next_poll_at = $2::bigint, poll_attempts = $3::int WHERE interview_id = $1 AND next_poll_at IS NOT DISTINCT FROM $4::bigint', [
        interviewId,
        nextPollAt,
        pollAttempts,
        seen,
      ]);
  }

  async recordStep(interviewId: string, step: StepRecord): Promise<boolean> {
    const { rowCount } = await this.q(RECORD_STEP_SQL, recordStepParams(interviewId, step));
    return (rowCount ?? 0) > 0;
  }

  async listSteps(interviewId: string): Promise<StepRecord[]> {
    const { rows } = await this.q<StepRow>('SELECT step, outcome, code, message, at FROM steps WHERE interview_id = $1 ORDER BY id', [interviewId]);
    return rows.map(toStep);
  }

  // Data-modifying CTEs: the erasure, its deletes and its audit row commit together or not at all. $1 is the
  // array of locked interview ids, $2 now, $3 what `detail` reads. Steps, inbox events, job payloads and the request
  // digests of the Idempotency-Keys that started the sessions are swept for every locked id, erased before or not: a
  // webhook recorded since (its check) is swept by erasing again.
  private eraseSql(auditKind: string, detail: string): string {
    return `WITH t AS (
        UPDATE sessions SET ${ERASED_COLUMNS}, updated_at = GREATEST(updated_at + 1, $2::bigint)
        WHERE interview_id = ANY($1::text[]) AND results_status <> 'erased' RETURNING interview_id, created_at),
      r AS (DELETE FROM results WHERE interview_id IN (SELECT interview_id FROM t)),
      s AS (DELETE FROM steps WHERE interview_id = ANY($1::text[])),
      e AS (DELETE FROM events WHERE interview_id = ANY($1::text[])),
      j AS (UPDATE jobs SET ${ERASED_JOBS} AND subject = ANY($1::text[])),
      v AS (UPDATE sessions SET ${ERASED_VERDICT_STATUS} AND interview_id = ANY($1::text[])),
      k AS (UPDATE idempotency_keys SET ${ERASED_IDEMPOTENCY_KEYS} AND interview_id = ANY($1::text[])),
      a AS (INSERT INTO audit (kind, subject, detail, at)
            SELECT '${auditKind}', interview_id, ${detail}, $2::bigint FROM t ORDER BY created_at, interview_id)
      SELECT count(*) AS n FROM t`;
  }

  /**
   * Locks the rows `lock` selects (FOR UPDATE waits for a saveResults holding one) and then erases exactly those, by
   * id, in a later statement of the same transaction: in READ COMMITTED its snapshot sees the results that saveResults
   * just committed, so they are deleted too (in one statement, the DELETE would use the snapshot taken before the
   * wait). Erasing by the locked ids, not by the selection again, matters when two replicas purge at once: a second
   * evaluation could pick rows this transaction never locked and miss results saved into them meanwhile.
   */
  private async erase(c: PoolClient, lock: string, lockArgs: unknown[], auditKind: string, detail: string, detailArg: unknown, now: number): Promise<{ locked: LockedSession[]; erased: number }> {
    const { rows: locked } = await this.q<LockedSession>(lock, lockArgs, c);
    if (locked.length === 0) return { locked, erased: 0 };
    const { rows } = await this.q<{ n: string }>(this.eraseSql(auditKind, detail), [locked.map((r) => r.interview_id), now, detailArg], c);
    return { locked, erased: Number(rows[0].n) };
  }

  async eraseSession(interviewId: string, reason: string, now: number, incodeDeletionAt?: IncodeDeletionAt): Promise<boolean> {
    // Known (even if erased before: a replayed request adds no second audit row, and sweeps what arrived since) is
    // what counts.
    const { locked } = await this.tx(async (c) => {
      const r = await this.erase(c, 'SELECT interview_id, origin, created_at FROM sessions WHERE interview_id = $1 FOR UPDATE', [interviewId], 'erasure', `jsonb_build_object('reason', $3::text)`, reason, now);
      const [s] = r.locked;
      const at = s ? (incodeDeletionAt?.({ origin: s.origin as SessionOrigin, createdAt: Number(s.created_at) }) ?? null) : null;
      if (at !== null) await this.q(QUEUED_JOBS, queuedJobsParams([erasureIncodeDeleteJob(interviewId, at, now)], now), c);
      return r;
    });
    return locked.length > 0;
  }

  async purgeExpired(createdBefore: number, now: number, signal?: AbortSignal, deleteAtIncode = false): Promise<number> {
    const limit = sweepLimit(signal);
    // In batches of purgeBatch, each its own transaction: one statement over a large backlog (the first sweep, or one
    // after an outage) would outlast DATABASE_TIMEOUT_MS and fail every hour, so personal data would outlive its
    // retention. A row another transaction holds is waited for, not skipped (a results save is then erased with it);
    // FOR UPDATE checks the condition again on the row it waited for, so a replica sweeping at once never erases (or
    // audits) a session twice.
    const due = `SELECT interview_id, origin FROM sessions WHERE created_at < $1::bigint AND results_status <> 'erased'
      ORDER BY created_at, interview_id LIMIT ${this.purgeBatch} FOR UPDATE`;
    const detail = `jsonb_build_object('reason', 'retention', 'createdBefore', $3::bigint)`;
    let n = 0;
    await inBatches(this.purgeBatch, async () => {
      const { locked, erased } = await this.tx(async (c) => {
        const r = await this.erase(c, due, [createdBefore], 'retention-purge', detail, createdBefore, now);
        // Only sessions this service started: one created elsewhere is its owner's to delete at Incode.
        const own = deleteAtIncode ? r.locked.filter((s) => s.origin === 'broker') : [];
        if (own.length) await this.q(QUEUED_JOBS, queuedJobsParams(own.map((s) => incodeDeleteJob(s.interview_id, now)), now), c);
        return r;
      });
      n += erased;
      return locked.length;
    }, limit);
    // Housekeeping of short-lived secrets rides along with the retention sweep (an expired resume token is refused at
    // lookup and cleared with its session). Finished jobs and processed webhook events older than the retention are
    // history nobody reads: without this the tables (and the queue-depth count behind /metrics) only ever grow.
    await inBatches(PURGE_BATCH, async () => (await this.q(EXPIRED_KEYS_PURGE, [now, PURGE_BATCH])).rowCount ?? 0, limit);
    for (const sql of HISTORY_PURGE) await inBatches(PURGE_BATCH, async () => (await this.q(sql, [createdBefore, PURGE_BATCH])).rowCount ?? 0, limit);
    return n;
  }

  async truncateLog(): Promise<boolean> {
    // Nothing this store can do: old row versions stay until (auto)vacuum lets their space be reused, and the WAL
    // until its segments are recycled (README, "Security and personal data").
    return true;
  }

  async keyFingerprints(): Promise<Map<string, string>> {
    // Read before the migrations too, on a database that may not have the table (or the schema) yet: none recorded.
    const rows = await missingTableAsNone(async () => (await this.q<{ key_id: string; fingerprint: string }>('SELECT key_id, fingerprint FROM encryption_keys')).rows);
    return new Map(rows.map((r) => [r.key_id, r.fingerprint]));
  }

  async recordKeyFingerprint(keyId: string, fingerprint: string, now: number): Promise<string> {
    await this.q('INSERT INTO encryption_keys (key_id, fingerprint, created_at) VALUES ($1, $2, $3::bigint) ON CONFLICT (key_id) DO NOTHING', [keyId, fingerprint, now]);
    // A statement of its own: one statement's reads see its own start, before a replica's insert that this one's
    // conflict waited for was committed (a read in the same statement would find no row at all).
    const { rows } = await this.q<{ fingerprint: string }>('SELECT fingerprint FROM encryption_keys WHERE key_id = $1', [keyId]);
    return rows[0].fingerprint;
  }

  async sampleCiphertexts(keyId: string): Promise<{ value: string; aad: string }[]> {
    const found = await Promise.all(
      keySamples(pgArgs(1), keyId).map(async ({ sql, prefix, sampled }) => {
        const rows = await missingTableAsNone(async () => (await this.q<Record<string, unknown>>(sql, [prefix])).rows);
        return rows.length ? [sampled(rows[0])] : [];
      }),
    );
    return found.flat();
  }

  async reencryptBatch(cursor: RekeyCursor, limit: number): Promise<RekeyBatch> {
    return reencryptBatch(this.cipher, cursor, limit, {
      read: async (t, params, after) => (await this.q<Record<string, string | null>>(rekeySelectSql(t, pgArgs(1), this.cipher.primaryPrefix, after), params)).rows,
      // One statement for the batch; each row it changed answers how many values it wrote.
      write: async (t, changed) => (await this.q<{ n: number }>(rekeyUpdatePostgres(t), rekeyUpdateParams(t, changed))).rows.reduce((n, r) => n + r.n, 0),
    });
  }

  // ---- inbox and jobs


  async recordEvent(e: InboxEvent, job: NewJob): Promise<boolean> {
    // One statement (so one round trip and one commit instead of BEGIN, two inserts and COMMIT): the job is
    // queued only when the event is new, and both land or neither does.
    const { rows } = await this.q<{ inserted: number }>(
      `WITH ev AS (
         INSERT INTO events (key, interview_id, onboarding_status, payload, received_at) VALUES ($1, $2, $3, $4::jsonb, $5::bigint)
         ON CONFLICT (key) DO NOTHING RETURNING key
       ), job AS (
         ${queuedJobSql(6, 'WHERE EXISTS (SELECT 1 FROM ev)')}
       )
       SELECT (SELECT count(*) FROM ev)::int AS inserted`,
      [e.key, e.interviewId, e.onboardingStatus, jsonText(e.payload), e.receivedAt, ...queuedJobParams(job, e.receivedAt)],
    );
    return rows[0].inserted > 0;
  }

  async markEventProcessed(key: string, now: number): Promise<void> {
    await this.q('UPDATE events SET processed_at = $2::bigint WHERE key = $1', [key, now]);
  }

  async hasEvent(key: string): Promise<boolean> {
    return ((await this.q('SELECT 1 FROM events WHERE key = $1', [key])).rowCount ?? 0) > 0;
  }

  async enqueueJob(j: NewJob, now: number): Promise<boolean> {
    if (j.unlessDoneSince !== undefined && j.dedupeKey !== undefined) return this.enqueueUnlessDone(j, j.dedupeKey, j.unlessDoneSince, now);
    const r = await this.q(queuedJobSql(1), queuedJobParams(j, now));
    return (r.rowCount ?? 0) > 0;
  }

  /**
   * Unless one with its dedupe key was done since (by its subject's index). The insert's own check reads the snapshot
   * its statement began with: a job whose `done` another replica commits while the insert waits on the dedupe key is
   * not seen, and once it commits the key no longer conflicts. So it is checked again in a second statement, which
   * sees that commit, and the job just inserted (no worker can see it before this transaction commits) taken back.
   */
  private async enqueueUnlessDone(j: NewJob, dedupeKey: string, since: number, now: number): Promise<boolean> {
    const params = queuedJobParams(j, now);
    return this.tx(async (c) => {
      // queuedJobParams: $3 the subject, $6 the dedupe key; $8 the time.
      const r = await this.q(queuedJobSql(1, `WHERE NOT ${doneSinceSql('$3', '$6', '$8::bigint')}`), [...params, since], c);
      if (!r.rowCount) return false;
      const taken = await this.q(`DELETE FROM jobs WHERE id = $1 AND ${doneSinceSql('$2', '$3', '$4::bigint')}`, [params[0], j.subject, dedupeKey, since], c);
      return !taken.rowCount;
    });
  }

  async claimJobs(owner: string, limit: number, leaseMs: number, now: number, subject?: string): Promise<Job[]> {
    // SKIP LOCKED: concurrent claimers pass over each other's rows instead of waiting or double-claiming.
    const { rows } = await this.q<JobRow>(
      `WITH queued AS (${CLAIM_DUE.queued}), lapsed AS (${CLAIM_DUE.lapsed}),
       c AS (SELECT id FROM (SELECT * FROM queued UNION ALL SELECT * FROM lapsed) due ORDER BY ${CLAIM_ORDER} LIMIT $2::int)
       UPDATE jobs j SET state = 'running', lease_owner = $3, lease_expires_at = $4::bigint, attempts = j.attempts + 1, updated_at = $1::bigint
       FROM c WHERE j.id = c.id
       RETURNING j.*`,
      [now, clampLimit(limit), owner, now + leaseMs, subject ?? null],
    );
    return rows.map(toJob).sort(byRunAt);
  }

  async completeJob(job: JobLease, owner: string, now: number, forget = false): Promise<boolean> {
    return ((await (forget ? this.q(FORGET_JOB, heldParams(job, owner)) : this.q(COMPLETE_JOB, [now, ...heldParams(job, owner)]))).rowCount ?? 0) > 0;
  }

  async failJob(job: JobLease, owner: string, errorCode: string, retryAt: number | null, now: number, then?: LaterRetry): Promise<boolean> {
    const held = heldParams(job, owner);
    // One statement: released later, a redelivery in between would be acked as a duplicate and then forgotten.
    const dead = (c: Queryable, retry?: NewJob) => (retry ? this.q(DEAD_JOB_THEN, [errorCode, now, ...held, ...queuedJobParams(retry, now)], c) : this.q(DEAD_JOB, [errorCode, now, ...held], c));
    const r =
      retryAt !== null
        ? await this.q(RETRY_JOB, [errorCode, retryAt, now, ...held])
        : then?.whileLive
          ? // The session is locked before the job, in the order an erasure takes them (session, then its jobs): the
            // other order deadlocks against an erasure of the same session.
            await this.tx(async (c) => dead(c, ((await this.q(LIVE_SESSION_FENCE, [then.subject], c)).rowCount ?? 0) > 0 ? then : undefined))
          : await dead(this.pool, then);
    return (r.rowCount ?? 0) > 0;
  }

  async releaseJob(job: JobLease, owner: string, now: number): Promise<boolean> {
    return ((await this.q(RELEASE_JOB, [now, ...heldParams(job, owner)])).rowCount ?? 0) > 0;
  }

  async deferJob(job: JobLease, owner: string, runAt: number, now: number): Promise<boolean> {
    return ((await this.q(DEFER_JOB, [runAt, now, ...heldParams(job, owner)])).rowCount ?? 0) > 0;
  }

  async countJobs(opts: { done?: boolean } = {}): Promise<Record<JobState, number>> {
    const counts = emptyCounts();
    const { rows } = await this.q<{ state: JobState; n: string }>(countJobsSql(opts.done !== false));
    for (const r of rows) if (r.state in counts) counts[r.state] = Number(r.n);
    return counts;
  }

  async listJobs(subject: string): Promise<Job[]> {
    const { rows } = await this.q<JobRow>('SELECT * FROM jobs WHERE subject = $1 ORDER BY created_at, run_at, id', [subject]);
    return rows.map(toJob);
  }

  async unfollowedDeadResults(since: number, before: number, limit: number): Promise<Job[]> {
    const { rows } = await this.q<JobRow>(UNFOLLOWED_DEAD_RESULTS, [since, before, limit]);
    return rows.map(toJob);
  }

  async activeJob(dedupeKey: string): Promise<Job | null> {
    const { rows } = await this.q<JobRow>(ACTIVE_JOB_SQL, [dedupeKey]);
    return rows[0] ? toJob(rows[0]) : null;
  }

  // ---- audit

  async audit(kind: string, subject: string, detail: Record<string, unknown>, now: number): Promise<void> {
    await this.q('INSERT INTO audit (kind, subject, detail, at) VALUES ($1, $2, $3::jsonb, $4::bigint)', [kind, subject, jsonText(detail), now]);
  }

  async listAudit(subject?: string): Promise<AuditEntry[]> {
    const { rows } =
      subject === undefined
        ? await this.q<AuditRow>('SELECT * FROM audit ORDER BY id')
        : await this.q<AuditRow>('SELECT * FROM audit WHERE subject = $1 ORDER BY id', [subject]);
    return rows.map(toAudit);
  }

  // ---- idempotency keys and resume tokens

  async claimIdempotencyKey(scope: string, key: string, requestHash: string, expiresAt: number, now: number): Promise<IdempotencyClaim> {
    // A concurrent release can delete the row between the upsert and the read; then try again, a few times.
    for (let attempt = 0; attempt < 5; attempt++) {
      // An expired key is taken over as if it never existed.
      const ins = await this.q(
        `INSERT INTO idempotency_keys AS k (scope, key, request_hash, response_enc, state, expires_at, created_at)
         VALUES ($1, $2, $3, NULL, 'pending', $4::bigint, $5::bigint)
         ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash, response_enc = NULL, state = 'pending', interview_id = NULL,
           expires_at = excluded.expires_at, created_at = excluded.created_at
         WHERE k.expires_at <= $5::bigint`,
        [scope, key, requestHash, expiresAt, now],
      );
      if (ins.rowCount) return { state: 'new' };
      const { rows } = await this.q<{ request_hash: string; response_enc: string | null; state: string }>(
        'SELECT request_hash, response_enc, state FROM idempotency_keys WHERE scope = $1 AND key = $2',
        [scope, key],
      );
      const r = rows[0];
      if (!r) continue;
      if (r.state === 'done') return idempotencyDone(this.cipher, scope, key, r.request_hash, r.response_enc!);
      if (r.state === 'erased') return { state: 'erased' };
      return { state: 'pending', requestHash: r.request_hash };
    }
    // Claimed and released by others five times over while this one looked: the key is busy, as a pending claim is
    // (409, come back later), never a 500 for what is a client's concurrent retries.
    return { state: 'pending', requestHash };
  }

  /** Parameters of idempotencyDoneSql. */
  private idempotencyDoneParams(idem: IdempotencyRef, interviewId: string): unknown[] {
    return [idempotencyResponseEnc(this.cipher, idem, interviewId), idem.expiresAt, interviewId, idem.scope, idem.key, idem.claimedAt];
  }

  async recordIdempotencyAnswer(idem: IdempotencyRef, interviewId: string, answer: IdempotencyAnswer): Promise<void> {
    await this.q(IDEMPOTENCY_ANSWER, [idempotencyResponseEnc(this.cipher, idem, interviewId, answer), idem.expiresAt, interviewId, idem.scope, idem.key, idem.claimedAt]);
  }

  async releaseIdempotencyKey(scope: string, key: string, claimedAt: number): Promise<void> {
    await this.q(`DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND created_at = $3::bigint AND state = 'pending'`, [scope, key, claimedAt]);
  }

  // One active resume token per session, kept on its row: a new one replaces (and so revokes) the previous.
  async createResumeToken(tokenHash: string, interviewId: string, expiresAt: number, newToken?: { token: string; now: number }): Promise<boolean> {
    if (!newToken) return this.setResume(interviewId, tokenHash, expiresAt);
    const t = tokenColumns(newToken.token, interviewId, this.cipher);
    // One transaction: the token and the resume token are kept together or not at all (the first write locks the row,
    // so an erasure cannot fall between them).
    return this.tx(async (c) => (await this.setToken(interviewId, t, newToken.now, c)) && this.setResume(interviewId, tokenHash, expiresAt, c));
  }

  private async setResume(interviewId: string, tokenHash: string, expiresAt: number, c: Queryable = this.pool): Promise<boolean> {
    const { rowCount } = await this.q(
      `UPDATE sessions SET resume_token_hash = $1, resume_expires_at = $2::bigint WHERE interview_id = $3 AND results_status <> 'erased'`,
      [tokenHash, expiresAt, interviewId],
      c,
    );
    return (rowCount ?? 0) > 0;
  }

  async checkResumeToken(interviewId: string, tokenHash: string, now: number): Promise<boolean> {
    const { rows } = await this.q<{ resume_token_hash: string | null }>(
      'SELECT resume_token_hash FROM sessions WHERE interview_id = $1 AND resume_expires_at > $2::bigint',
      [interviewId, now],
    );
    return isResumeHash(tokenHash) && hashesEqual(rows[0]?.resume_token_hash, tokenHash);
  }

  async consumeResumeToken(interviewId: string, tokenHash: string, now: number, heldUntil: number): Promise<SpentResumeToken | null> {
    const { rows: read } = await this.q<{ resume_token_hash: string | null }>(
      'SELECT resume_token_hash FROM sessions WHERE interview_id = $1 AND resume_expires_at > $2::bigint',
      [interviewId, now],
    );
    const stored = read[0]?.resume_token_hash;
    if (!resumeSpendable(stored, tokenHash, now)) return null;
    // Compared in constant time above; the UPDATE conditional on the value read makes the spend atomic (one winner
    // among racers).
    const { rows } = await this.q<SpentRow>(
      `UPDATE sessions SET resume_token_hash = $4
       WHERE interview_id = $1 AND resume_token_hash = $2 AND resume_expires_at > $3::bigint AND results_status <> 'erased'
       RETURNING resume_expires_at, created_at, onboarding_status, configuration_id, results_status, last_error`,
      [interviewId, stored, now, spentResumeMarker(tokenHash, heldUntil)],
    );
    return rows[0] ? toSpentResumeToken(rows[0], heldUntil) : null;
  }

  async restoreResumeToken(interviewId: string, tokenHash: string, expiresAt: number, heldUntil: number): Promise<void> {
    await this.q(
      `UPDATE sessions SET resume_token_hash = $2, resume_expires_at = $3::bigint
       WHERE interview_id = $1 AND resume_token_hash = $4 AND results_status <> 'erased'`,
      [interviewId, tokenHash, expiresAt, spentResumeMarker(tokenHash, heldUntil)],
    );
  }
}
