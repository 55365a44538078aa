// Row shapes shared by both engines and their mapping to records (decryption, bigint strings to numbers, cursors).
import { randomUUID } from 'node:crypto';
import { interviewIdOfToken } from '../incode/token-claims';
import { VERDICT_STATUSES } from '../results/status';
import { Cipher, hashesEqual, sha256Hex } from './crypto';
import { InvalidCursorError, type AuditEntry, type IdempotencyAnswer, type IdempotencyClaim, type IdempotencyRef, type JobLease, type Decision, type Job, type JobState, type NewJob, type NewSession, type ResultsStatus, type SessionListing, type SessionOrigin, type SessionRecord, type SessionState, type SpentResumeToken, type StepRecord } from './types';

// The AAD of every encrypted column: a ciphertext copied to another row or column no longer decrypts.
export const aad = {
  token: (id: string) => `sessions.token:${id}`,
  externalCustomerId: (id: string) => `sessions.external_customer_id:${id}`,
  scores: (id: string) => `results.scores:${id}`,
  ocr: (id: string) => `results.ocr:${id}`,
  idempotencyResponse: (scope: string, key: string) => `idempotency_keys.response:${scope}:${key}`,
};

type Num = number | string;
const num = (v: Num): number => Number(v);
const numOrNull = (v: Num | null | undefined): number | null => (v === null || v === undefined ? null : Number(v));

export interface SessionRow {
  interview_id: string;
  origin: string;
  external_customer_id_enc: string | null;
  token_enc: string | null;
  token_hash: string | null;
  onboarding_status: string;
  status_rank: Num;
  results_status: string;
  decision: string | null;
  last_error: string | null;
  created_at: Num;
  updated_at: Num;
  /** Schema version 8: null on rows from before it (updated_at stands in). */
  active_at?: Num | null;
  next_poll_at: Num | null;
  poll_attempts: Num;
  configuration_id: string | null;
}

export function toSession(r: SessionRow, cipher: Cipher): SessionRecord {
  return { ...toSessionListing(r, cipher), token: r.token_enc ? cipher.decrypt(r.token_enc, aad.token(r.interview_id)) : null };
}

/** A session as the list serves it: no token, so none is decrypted (one decryption per row, not two). */
export function toSessionListing(r: SessionRow, cipher: Cipher): SessionListing {
  return {
    ...toSessionState(r),
    externalCustomerId: r.external_customer_id_enc ? cipher.decrypt(r.external_customer_id_enc, aad.externalCustomerId(r.interview_id)) : null,
  };
}

/**
 * Sessions due for a poll, oldest first (parameters: now, limit), with only the columns toSessionState reads: the poller
 * runs every second or so, and needs no ciphertext.
 */
export function sessionsDueSql(arg: SqlArg): string {
  return `SELECT interview_id, origin, onboarding_status, status_rank, results_status, decision, last_error, created_at, updated_at,
      active_at, next_poll_at, poll_attempts, configuration_id
    FROM sessions WHERE next_poll_at IS NOT NULL AND next_poll_at <= ${arg(0, 'bigint')} ORDER BY next_poll_at, interview_id LIMIT ${arg(1, 'int')}`;
}

/** A session without its encrypted values: nothing to decrypt, so a row no configured key reads is listed too. */
export function toSessionState(r: SessionRow): SessionState {
  return {
    interviewId: r.interview_id,
    origin: r.origin as SessionOrigin,
    onboardingStatus: r.onboarding_status,
    statusRank: num(r.status_rank),
    resultsStatus: r.results_status as ResultsStatus,
    decision: (r.decision as Decision | null) ?? null,
    lastError: r.last_error,
    createdAt: num(r.created_at),
    updatedAt: num(r.updated_at),
    activeAt: numOrNull(r.active_at ?? null) ?? num(r.updated_at),
    nextPollAt: numOrNull(r.next_poll_at),
    pollAttempts: num(r.poll_attempts),
    configurationId: r.configuration_id ?? null,
  };
}

/**
 * A session token's columns, the same for a new session and a replaced token: encrypted, hashed, and whether
 * lookups need the hash index (1 unless the token names its own session; see migration 3 and tokenLookup).
 */
export function tokenColumns(token: string | null, interviewId: string, cipher: Cipher) {
  if (token === null) return { token_enc: null, token_hash: null, token_hash_indexed: 1 as 0 | 1 };
  return {
    token_enc: cipher.encrypt(token, aad.token(interviewId)),
    token_hash: sha256Hex(token),
    token_hash_indexed: (interviewIdOfToken(token) === interviewId ? 0 : 1) as 0 | 1,
  };
}

/** A lookup by token: the hash to match, and the session the token names (tried first, by primary key), if any. */
export function tokenLookup(token: string): { hash: string; namedId: string | null } {
  return { hash: sha256Hex(token), namedId: interviewIdOfToken(token) };
}

// A completed Idempotency-Key keeps the session it created (its token stays in sessions), the SHA-256 of the request and,
// for a route that keeps one (recordIdempotencyAnswer), its final answer, encrypted like every response a key may carry: unlike the request_hash column (an HMAC under a key derived
// from the first DATA_ENCRYPTION_KEY), a key rotation re-encrypts it, so a replay still compares once the old key is gone.
export function idempotencyResponseEnc(cipher: Cipher, idem: IdempotencyRef, interviewId: string, answer?: IdempotencyAnswer): string {
  return cipher.encryptJson({ interviewId, request: idem.requestSha256, ...(answer ? { answer } : {}) }, aad.idempotencyResponse(idem.scope, idem.key));
}

interface IdempotencyResponse {
  interviewId: string;
  /** Absent from a response written before the request's SHA-256 was kept. */
  request?: string;
  /** The request's final answer, when its route keeps one (recordIdempotencyAnswer). */
  answer?: IdempotencyAnswer;
}

/**
 * The done claim a stored response makes. Its request digest is the SHA-256 the response keeps (which
 * keyedDigest.matches accepts as well as an HMAC), or, for a response written before that, the request_hash HMAC.
 */
export function idempotencyDone(cipher: Cipher, scope: string, key: string, requestHash: string, enc: string): IdempotencyClaim {
  const r = cipher.decryptJson<IdempotencyResponse>(enc, aad.idempotencyResponse(scope, key));
  return { state: 'done', requestHash: r.request ?? requestHash, interviewId: r.interviewId, ...(r.answer ? { answer: r.answer } : {}) };
}

/** Whether a decrypted response carries the request's SHA-256 (so a replay no longer needs request_hash's key). */
export function hasRequestSha256(plain: string): boolean {
  try {
    return typeof (JSON.parse(plain) as IdempotencyResponse).request === 'string';
  } catch {
    return false;
  }
}

/**
 * The attempt a job handed back at shutdown gets back (releaseJob), as SQL over its row: only when the attempt before
 * was not itself handed back. A job that hangs every process it runs in until a shutdown (or one that crashes it, as
 * an uncaught error also closes the app) then still uses up its attempts and reaches ATTEMPTS_EXHAUSTED.
 */
const RELEASE_REFUND = "CASE WHEN last_error = 'SHUTDOWN' THEN 0 ELSE 1 END";

/**
 * A job still held by the claim that gave it `lease`: the condition of every write that records an attempt's outcome.
 * A running job is claimed again only once its lease has lapsed, so the new claim's expiry is later than the old one's
 * and an attempt that outlived its lease records nothing, even in the worker that claimed the job again. (A job
 * queued again and claimed by another worker may get an earlier expiry, but never under the same owner: owners are
 * per worker, and one worker's expiries only go forward unless its clock steps back.) Parameters from `first`: id,
 * owner, lease expiry.
 */
function heldSql(arg: SqlArg, first: number): string {
  return `id = ${arg(first)} AND lease_owner = ${arg(first + 1)} AND lease_expires_at = ${arg(first + 2, 'bigint')} AND state = 'running'`;
}

/** The parameters of heldSql. */
export function heldParams(job: JobLease, owner: string): [string, string, number | null] {
  return [job.id, owner, job.leaseExpiresAt];
}

// The writes that record an attempt's outcome, the same on both engines. Parameters in the order they appear (SQLite
// binds `?` so), ending with heldSql's.

/** completeJob. Parameters: now, then heldSql's. */
export function completeJobSql(arg: SqlArg): string {
  return `UPDATE jobs SET state = 'done', lease_expires_at = NULL, updated_at = ${arg(0, 'bigint')} WHERE ${heldSql(arg, 1)}`;
}

/** completeJob of a job kept as no history. Parameters: heldSql's. */
export function forgetJobSql(arg: SqlArg): string {
  return `DELETE FROM jobs WHERE ${heldSql(arg, 0)}`;
}

/** failJob for good. Parameters: error code, now, then heldSql's. */
export function deadJobSql(arg: SqlArg): string {
  return `UPDATE jobs SET state = 'dead', last_error = ${arg(0)}, lease_expires_at = NULL, updated_at = ${arg(1, 'bigint')} WHERE ${heldSql(arg, 2)}`;
}

/** A session that exists and is not erased (a `whileLive` job's condition). Parameter: its interview id. */
export const liveSessionSql = (arg: SqlArg, lock = '') => `SELECT 1 FROM sessions WHERE interview_id = ${arg(0)} AND results_status <> 'erased'${lock}`;

/** failJob with a retry. Parameters: error code, retry time, now, then heldSql's. */
export function retryJobSql(arg: SqlArg): string {
  return `UPDATE jobs SET state = 'queued', last_error = ${arg(0)}, run_at = ${arg(1, 'bigint')}, lease_owner = NULL, lease_expires_at = NULL,
      updated_at = ${arg(2, 'bigint')} WHERE ${heldSql(arg, 3)}`;
}

/**
 * Puts a running job off (deferJob), the same on both engines: queued for `runAt`, its attempt given back (a running
 * job's claim counted one) and its last error kept (the attempt never reached Incode). Parameters: run at, now, then
 * heldSql's.
 */
export function deferJobSql(arg: SqlArg): string {
  return `UPDATE jobs SET state = 'queued', run_at = ${arg(0, 'bigint')}, attempts = attempts - 1,
      lease_owner = NULL, lease_expires_at = NULL, updated_at = ${arg(1, 'bigint')}
    WHERE ${heldSql(arg, 2)}`;
}

/**
 * Hands a running job back (releaseJob), the same on both engines. `greatest` is the dialect's two-argument maximum.
 * Parameters: now, then heldSql's.
 */
export function releaseJobSql(arg: SqlArg, greatest: 'MAX' | 'GREATEST'): string {
  return `UPDATE jobs SET state = 'queued', last_error = 'SHUTDOWN', run_at = ${arg(0, 'bigint')}, attempts = ${greatest}(attempts - ${RELEASE_REFUND}, 0),
      lease_owner = NULL, lease_expires_at = NULL, updated_at = ${arg(0, 'bigint')}
    WHERE ${heldSql(arg, 1)}`;
}

/** The reviewer's verdict statuses as an SQL list: each is the decision itself, which an erasure does not keep. */
const VERDICT_STATUSES_SQL = `(${VERDICT_STATUSES.map((v) => `'${v}'`).join(', ')})`;

/**
 * What an erasure sets on a session row (both engines, erasure and retention): every PII column cleared, the decision
 * too (with the interviewId it says how a person's verification ended), and a reviewer's verdict status, which is the
 * decision, becomes MANUAL_REVIEW_VERDICT (its rank stays, so nothing moves it back). Other statuses stay (where the
 * flow was, which the state machine reads), and the audit rows say when and why it was erased. The session's steps,
 * inbox events and job payloads go in the same write (the engines' sweep of an erased session).
 */
export const ERASED_COLUMNS =
  "token_enc = NULL, token_hash = NULL, external_customer_id_enc = NULL, resume_token_hash = NULL, resume_expires_at = NULL, decision = NULL, last_error = NULL, results_status = 'erased', " +
  `onboarding_status = CASE WHEN onboarding_status IN ${VERDICT_STATUSES_SQL} THEN 'MANUAL_REVIEW_VERDICT' ELSE onboarding_status END`;

/**
 * A reviewer's verdict status left on a session erased already (by a replica from before schema version 9), read as
 * the erasure now writes it (SET ... WHERE, the subject's condition to follow with AND).
 */
export const ERASED_VERDICT_STATUS = `onboarding_status = 'MANUAL_REVIEW_VERDICT' WHERE results_status = 'erased' AND onboarding_status IN ${VERDICT_STATUSES_SQL}`;

/**
 * What an erasure leaves of the session's jobs that name its state (SET ... WHERE, the subject's condition to follow):
 * a callback's payload and dedupe key name its decision, a check's or a results fetch's the status (a verdict among
 * them). A job still queued then finds the session erased and does nothing; a deletion at Incode keeps its payload.
 */
export const ERASED_JOBS = "payload = '{}', dedupe_key = NULL WHERE kind IN ('callback', 'verify', 'results')";

/**
 * A step of an erased session, recorded by a server-side onboarding still running when it was erased, is not written
 * (the erasure deleted its steps: their codes and outcomes say how the checks went). INSERT ... SELECT on both
 * engines; parameters: step, outcome, code, message, at, interview_id. `lock` is PostgreSQL's row lock (ERASURE_FENCE).
 */
export const recordStepSql = (arg: SqlArg, lock = '') =>
  `INSERT INTO steps (interview_id, step, outcome, code, message, at)
   SELECT interview_id, ${arg(0)}, ${arg(1)}, ${arg(2)}, ${arg(3)}, ${arg(4, 'bigint')} FROM sessions WHERE interview_id = ${arg(5)} AND results_status <> 'erased'${lock}`;

/** recordStepSql's parameters, in its order. */
export const recordStepParams = (interviewId: string, step: StepRecord) => [step.step, step.outcome, step.code ?? null, step.message ?? null, step.at, interviewId];

/** The columns a job is inserted with (its values in this order), on both engines. */
export const INSERT_JOB = 'INSERT INTO jobs (id, kind, subject, payload, state, attempts, run_at, dedupe_key, created_at, updated_at)';

/**
 * NewJob.unlessDoneSince's condition: a job of this subject with this dedupe key done at or after that time (found
 * through the subject's index). Parameters: subject, dedupe key, time.
 */
export const doneSinceSql = (subject: string, dedupeKey: string, since: string) =>
  `EXISTS (SELECT 1 FROM jobs WHERE subject = ${subject} AND dedupe_key = ${dedupeKey} AND state = 'done' AND updated_at >= ${since})`;

/** The columns a spent resume token answers with, on both engines. */
export interface SpentRow {
  resume_expires_at: Num;
  created_at: Num;
  onboarding_status: string;
  configuration_id: string | null;
  results_status: string;
  last_error: string | null;
}

/**
 * The failures a later sign of life (a status move, a resume) undoes: polling gave up (POLLING_GAVE_UP), or Incode said
 * twice it had no such session (INCODE_SESSION_GONE; a status move proves it has). Literals in SQL below: fixed strings
 * of this module.
 */
const REVIVABLE_FAILURES: readonly string[] = ['POLLING_GAVE_UP', 'INCODE_SESSION_GONE'];
const REVIVABLE_SQL = `(${REVIVABLE_FAILURES.map((c) => `'${c}'`).join(', ')})`;

/** Whether a session's results failed for a reason a sign of life undoes (REVIVABLE_FAILURES). */
export const revivableFailure = (s: { resultsStatus: string; lastError: string | null }): boolean =>
  s.resultsStatus === 'failed' && s.lastError !== null && REVIVABLE_FAILURES.includes(s.lastError);

export function toSpentResumeToken(r: SpentRow, heldUntil: number): SpentResumeToken {
  return {
    expiresAt: num(r.resume_expires_at),
    heldUntil,
    createdAt: num(r.created_at),
    onboardingStatus: r.onboarding_status,
    configurationId: r.configuration_id,
    revivable: revivableFailure({ resultsStatus: r.results_status, lastError: r.last_error }),
  };
}

/**
 * setResultsStatus never erases: 'erased' without the erasure's deletions would leave the PII in a row that every
 * later erasure then skips as done.
 */
export function assertNotErasing(status: ResultsStatus | null): void {
  if (status === 'erased') throw new Error('setResultsStatus cannot erase a session: eraseSession does');
}

/** Finished jobs and processed events deleted per statement by the retention sweep. */
export const PURGE_BATCH = 5_000;
/** Sessions erased per transaction by the retention sweep (each batch stays well inside a statement timeout). */
export const SESSION_PURGE_BATCH = 2_000;
/** How long one retention sweep goes on deleting batches at most; the next sweep (hourly) goes on from there. */
const PURGE_BUDGET_MS = 60_000;

/**
 * The history the retention sweep drops in batches, the same on both engines: finished jobs and processed webhook
 * events older than the cutoff. Parameters: the cutoff, then the batch size.
 */
export function historyPurgeSql(arg: SqlArg): string[] {
  return [
    `DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state IN ('done', 'dead') AND updated_at < ${arg(0, 'bigint')} LIMIT ${arg(1)})`,
    `DELETE FROM events WHERE key IN (SELECT key FROM events WHERE processed_at < ${arg(0, 'bigint')} LIMIT ${arg(1)})`,
  ];
}

/**
 * Expired Idempotency-Keys, dropped in batches like the history (a backlog must not hold SQLite's write lock, nor run
 * past PostgreSQL's statement timeout and take the history purge after it down with it). Parameters: now, batch size.
 */
export const expiredKeysPurgeSql = (arg: SqlArg) =>
  `DELETE FROM idempotency_keys WHERE (scope, key) IN (SELECT scope, key FROM idempotency_keys WHERE expires_at <= ${arg(0, 'bigint')} LIMIT ${arg(1)})`;

/** When one retention sweep stops: its time budget (shared by all its loops) or a shutdown, whichever comes first. */
export interface SweepLimit {
  until: number;
  signal?: AbortSignal;
}

export function sweepLimit(signal?: AbortSignal): SweepLimit {
  return { until: Date.now() + PURGE_BUDGET_MS, signal };
}

/**
 * Runs `batch` (which answers how many rows it took) until one comes back short or the sweep must stop: a backlog (the
 * first sweep, a high webhook rate) is worked off in bounded transactions instead of one that holds the write lock, or
 * outlasts the statement timeout, for as long as the backlog is large.
 */
export async function inBatches(size: number, batch: () => Promise<number>, limit: SweepLimit): Promise<void> {
  while (!limit.signal?.aborted && Date.now() < limit.until) {
    if ((await batch()) < size) return;
  }
}

/**
 * What a spent resume token leaves in resume_token_hash until `heldUntil`: it never matches a hash (so it cannot be
 * spent again meanwhile), and only that same spend can restore its token over it, so a token issued after the spend
 * (which overwrites it) is never replaced by an older one whose Incode call failed. Once `heldUntil` is past, the
 * token may be spent again: a spend whose process died (or whose restore the database refused) does not lose it.
 */
export function spentResumeMarker(tokenHash: string, heldUntil: number): string {
  return `${SPENT}${tokenHash}:${heldUntil}`;
}

const SPENT = 'spent:';

/**
 * Whether `stored` (resume_token_hash) lets `tokenHash` be spent at `now`: it is that hash, or that hash's spend whose
 * hold has lapsed. Compared in constant time.
 */
export function resumeSpendable(stored: string | null | undefined, tokenHash: string, now: number): boolean {
  if (!isResumeHash(tokenHash) || typeof stored !== 'string') return false;
  if (!stored.startsWith(SPENT)) return hashesEqual(stored, tokenHash);
  const at = stored.lastIndexOf(':');
  const heldUntil = Number(stored.slice(at + 1));
  return hashesEqual(stored.slice(SPENT.length, at), tokenHash) && Number.isFinite(heldUntil) && heldUntil <= now;
}

/** Whether a resume-token hash given to the store can be a live token's (a marker passed as a hash never is). */
export function isResumeHash(tokenHash: string): boolean {
  return typeof tokenHash === 'string' && !tokenHash.startsWith(SPENT);
}

/**
 * What an upsert of an existing session (table alias `s`) may change, the same on both engines: it fills a missing
 * token or customer id (never on an erased session) and only ever raises the status. `greatest` is the dialect's
 * two-argument maximum (SQLite MAX, PostgreSQL GREATEST).
 */
export function sessionMergeSql(greatest: 'MAX' | 'GREATEST'): string {
  const fill = (col: string, when = col) => `${col} = CASE WHEN s.results_status <> 'erased' AND s.${when} IS NULL THEN excluded.${col} ELSE s.${col} END`;
  return `ON CONFLICT (interview_id) DO UPDATE SET
    ${fill('token_enc')},
    ${fill('token_hash', 'token_enc')},
    ${fill('token_hash_indexed', 'token_enc')},
    ${fill('external_customer_id_enc')},
    ${fill('configuration_id')},
    onboarding_status = CASE WHEN excluded.status_rank > s.status_rank THEN excluded.onboarding_status ELSE s.onboarding_status END,
    status_rank = ${greatest}(s.status_rank, excluded.status_rank),
    updated_at = CASE WHEN excluded.status_rank > s.status_rank THEN ${greatest}(s.updated_at + 1, excluded.updated_at) ELSE ${greatest}(s.updated_at, excluded.updated_at) END
  WHERE excluded.status_rank > s.status_rank
     OR (s.results_status <> 'erased' AND (
          (s.token_enc IS NULL AND excluded.token_enc IS NOT NULL)
       OR (s.external_customer_id_enc IS NULL AND excluded.external_customer_id_enc IS NOT NULL)
       OR (s.configuration_id IS NULL AND excluded.configuration_id IS NOT NULL)))`;
}

/** Column values for a new session row, PII encrypted. */
export function sessionInsertValues(s: NewSession, cipher: Cipher) {
  const token = s.token ?? null;
  const ext = s.externalCustomerId ?? null;
  return {
    interview_id: s.interviewId,
    origin: s.origin,
    external_customer_id_enc: ext === null ? null : cipher.encrypt(ext, aad.externalCustomerId(s.interviewId)),
    ...tokenColumns(token, s.interviewId, cipher),
    onboarding_status: s.onboardingStatus ?? 'UNKNOWN',
    status_rank: s.statusRank ?? 0,
    next_poll_at: s.nextPollAt ?? null,
    configuration_id: s.configurationId ?? null,
    resume_token_hash: s.resume?.tokenHash ?? null,
    resume_expires_at: s.resume?.expiresAt ?? null,
    now: s.now,
  };
}

type SessionInsertValues = ReturnType<typeof sessionInsertValues>;

// The columns of a new session row, once for both engines: each takes a value of sessionInsertValues (with its
// PostgreSQL cast) or a constant. The resume-token columns come last, for the statements that set them.
const NEW_SESSION_COLUMNS: ReadonlyArray<[column: string, value: { key: keyof SessionInsertValues; pgCast?: string } | { constant: string }]> = [
  ['interview_id', { key: 'interview_id' }],
  ['origin', { key: 'origin' }],
  ['external_customer_id_enc', { key: 'external_customer_id_enc' }],
  ['token_enc', { key: 'token_enc' }],
  ['token_hash', { key: 'token_hash' }],
  ['token_hash_indexed', { key: 'token_hash_indexed', pgCast: 'smallint' }],
  ['onboarding_status', { key: 'onboarding_status' }],
  ['status_rank', { key: 'status_rank', pgCast: 'int' }],
  ['results_status', { constant: "'pending'" }],
  ['created_at', { key: 'now', pgCast: 'bigint' }],
  ['updated_at', { key: 'now', pgCast: 'bigint' }],
  ['active_at', { key: 'now', pgCast: 'bigint' }],
  ['next_poll_at', { key: 'next_poll_at', pgCast: 'bigint' }],
  ['poll_attempts', { constant: '0' }],
  ['configuration_id', { key: 'configuration_id' }],
  ['resume_token_hash', { key: 'resume_token_hash' }],
  ['resume_expires_at', { key: 'resume_expires_at', pgCast: 'bigint' }],
];
const RESUME_COLUMNS = 2;

/**
 * `INSERT INTO sessions [AS s] (...) VALUES (...)` for a new session row: SQLite binds sessionInsertValues by name;
 * PostgreSQL by position, one parameter per distinct value from $1 on, in the order `keys` gives (`next` is the
 * first number left for the rest of the statement).
 */
export function sessionInsertSql(dialect: 'sqlite' | 'pg', opts: { resume: boolean; alias?: string }) {
  const columns = opts.resume ? NEW_SESSION_COLUMNS : NEW_SESSION_COLUMNS.slice(0, -RESUME_COLUMNS);
  const keys: (keyof SessionInsertValues)[] = [];
  const values = columns.map(([, v]) => {
    if ('constant' in v) return v.constant;
    if (dialect === 'sqlite') return `@${v.key}`;
    if (!keys.includes(v.key)) keys.push(v.key);
    const n = keys.indexOf(v.key) + 1;
    return v.pgCast ? `$${n}::${v.pgCast}` : `$${n}`;
  });
  const table = opts.alias ? `sessions AS ${opts.alias}` : 'sessions';
  return {
    sql: `INSERT INTO ${table} (${columns.map(([c]) => c).join(', ')}) VALUES (${values.join(', ')})`,
    keys,
    next: keys.length + 1,
  };
}

/** The order jobs are claimed in: when due, then when queued. */
export const CLAIM_ORDER = 'run_at, created_at, id';

/**
 * The two halves of a job claim, each read apart in its index's order and at most `limit` long (one query with an OR
 * between them sorted the whole due backlog at every claim): the queued jobs whose time has come and the running ones
 * whose lease lapsed. The claim takes the earliest `limit` of both (CLAIM_ORDER). `p` spells the parameters in the
 * dialect (now, limit, and the one subject to claim for, or NULL); `lock` is PostgreSQL's row lock.
 */
export function dueJobsSql(p: { now: string; limit: string; subject: string }, lock = ''): { queued: string; lapsed: string } {
  const half = (due: string) =>
    `SELECT id, run_at, created_at FROM jobs WHERE ${due} AND (${p.subject} IS NULL OR subject = ${p.subject}) ORDER BY ${CLAIM_ORDER} LIMIT ${p.limit}${lock}`;
  return { queued: half(`state = 'queued' AND run_at <= ${p.now}`), lapsed: half(`state = 'running' AND lease_expires_at <= ${p.now}`) };
}

/** A dialect's i-th parameter of a statement: PostgreSQL numbers them (with a cast where needed), SQLite does not. */
export type SqlArg = (i: number, cast?: string) => string;
export const pgArgs = (first: number): SqlArg => (i, cast) => `$${first + i}${cast ? `::${cast}` : ''}`;
export const sqliteArgs: SqlArg = () => '?';

/**
 * Marks one claim of an Idempotency-Key done, naming its session (an erasure of the session finds the key by it).
 * Parameters: response_enc, expires_at, interview_id, scope, key, claimed_at.
 */
export function idempotencyDoneSql(arg: SqlArg, when = ''): string {
  return `UPDATE idempotency_keys SET response_enc = ${arg(0)}, state = 'done', expires_at = ${arg(1, 'bigint')}, interview_id = ${arg(2)}
    WHERE scope = ${arg(3)} AND key = ${arg(4)} AND created_at = ${arg(5, 'bigint')} ${when}`;
}

/** Room between the end, at the latest, of a start sent at its claim's deadline and the claim lapsing (claimDeadlines). */
export const SEND_MARGIN_MS = 2000;

/**
 * What an erasure leaves of the Idempotency-Keys that started the session (SET ... WHERE, the session's condition to
 * follow with AND): the request's digests go (with the encryption key, an HMAC or a SHA-256 of a request holding the
 * customer id confirms a guess of it), and the key answers that its session was erased until it expires. Only a key
 * claimed before its session was created: a key that started it always was (2 s of room for a clock stepped back
 * between the two), and one a replica of an earlier release took over after it expired (which leaves the column as it
 * was) names a later session: a claim lapses at least 2 s after its session can have been created (SEND_MARGIN_MS).
 */
export const ERASED_IDEMPOTENCY_KEYS = `state = 'erased', request_hash = 'erased', response_enc = NULL
  WHERE state = 'done' AND created_at <= (SELECT s.created_at FROM sessions s WHERE s.interview_id = idempotency_keys.interview_id) + ${SEND_MARGIN_MS}`;

/**
 * The results_status a status update leaves: the given one (null keeps the current), except that stored results
 * (ready) stay served when a later job dies, decided in the row so no read can go stale. `status` is the parameter.
 */
export const resultsStatusSql = (status: string) =>
  `CASE WHEN ${status} = 'failed' AND results_status = 'ready' THEN results_status ELSE COALESCE(${status}, results_status) END`;

/**
 * setResultsStatus on both engines (its parameters as each names them). An erased session never changes. Recording
 * only an error (status null) leaves a session polling gave up on marked POLLING_GAVE_UP (or one Incode said it did not
 * know, INCODE_SESSION_GONE), which is what a later sign of life revives it by, whichever job's failure it is. A row from before schema version 8 keeps its last sign of life
 * as it was before this write moves updated_at (a recorded failure is none), so that polling still gives up on it.
 * Pending again is a compare-and-set: it only revives a session failed for one of those (another replica may have stored
 * its results meanwhile, which must not read pending again), and writes nothing otherwise.
 */
export function setResultsStatusSql(p: { id: string; status: string; lastError: string; now: string }, greatest: 'MAX' | 'GREATEST'): string {
  return `UPDATE sessions SET
      results_status = ${resultsStatusSql(p.status)},
      last_error = CASE WHEN ${p.status} IS NULL AND results_status = 'failed' AND last_error IN ${REVIVABLE_SQL} THEN last_error ELSE ${p.lastError} END,
      active_at = COALESCE(active_at, updated_at), updated_at = ${greatest}(updated_at + 1, ${p.now})
    WHERE interview_id = ${p.id} AND results_status <> 'erased'
      AND (COALESCE(CAST(${p.status} AS TEXT), '') <> 'pending' OR (results_status = 'failed' AND COALESCE(last_error, '') IN ${REVIVABLE_SQL}))`;
}

/**
 * Stores fetched results over the stored ones only when their fetch started at or after theirs: a slow job for an
 * older status replaces nothing (the statement then changes no row, and the session keeps its decision).
 */
export const RESULTS_UPSERT_TAIL = `ON CONFLICT (interview_id) DO UPDATE SET scores_enc = excluded.scores_enc, ocr_enc = excluded.ocr_enc,
    key_id = excluded.key_id, fetched_at = excluded.fetched_at
  WHERE results.fetched_at <= excluded.fetched_at`;

/** The record of a session just inserted, built from what the caller holds (no read-back, no decrypting what was just encrypted). */
export function freshSessionRecord(s: NewSession, v: SessionInsertValues): SessionRecord {
  return {
    interviewId: s.interviewId,
    origin: s.origin,
    externalCustomerId: s.externalCustomerId ?? null,
    token: s.token ?? null,
    onboardingStatus: v.onboarding_status,
    statusRank: v.status_rank,
    resultsStatus: 'pending',
    decision: null,
    lastError: null,
    createdAt: s.now,
    updatedAt: s.now,
    activeAt: s.now,
    nextPollAt: v.next_poll_at,
    pollAttempts: 0,
    configurationId: v.configuration_id,
  };
}

export interface StepRow {
  step: string;
  outcome: string;
  code: string | null;
  message: string | null;
  at: Num;
}

export function toStep(r: StepRow): StepRecord {
  return { step: r.step, outcome: r.outcome as StepRecord['outcome'], code: r.code, message: r.message, at: num(r.at) };
}

export interface JobRow {
  id: string;
  kind: string;
  subject: string;
  payload: string | Record<string, unknown>;
  state: string;
  attempts: Num;
  run_at: Num;
  lease_owner: string | null;
  lease_expires_at: Num | null;
  last_error: string | null;
  created_at: Num;
}

/** The active job of a dedupe key, through the partial unique index that allows only one. Parameter: the key. */
export const activeJobSql = (arg: SqlArg) => `SELECT * FROM jobs WHERE dedupe_key = ${arg(0)} AND state IN ('queued', 'running')`;

/**
 * PostgreSQL's lock for recordStepSql: the session's row, so a step recorded beside an erasure waits for it and then
 * reads the row as erased (READ COMMITTED re-reads a locked row), instead of going by a snapshot taken before it and
 * leaving a row the erasure's own delete could not see. KEY SHARE conflicts only with the erasure's FOR UPDATE, not
 * with other writers. SQLite's single writer needs none.
 */
export const ERASURE_FENCE = ' FOR KEY SHARE';

/** Whether a setResultsStatus write moved the session to `status` (its `then` is queued only then). */
export function movedTo(status: string | null, before: string | undefined, after: string | undefined): boolean {
  return status !== null && before !== undefined && before !== status && after === status;
}

/** A subject's jobs of a kind in the order they were queued, what repeatsLatest reads. Parameters: subject, kind. */
export const jobsOfKindSql = (arg: SqlArg) => `SELECT id, payload, state FROM jobs WHERE subject = ${arg(0)} AND kind = ${arg(1)} ORDER BY created_at, id`;

/** Brings a queued job's run forward to now (a repeat of it was asked for). Parameters: now, id, now. */
export const wakeQueuedJobSql = (arg: SqlArg) => `UPDATE jobs SET run_at = ${arg(0, 'bigint')} WHERE id = ${arg(1)} AND state = 'queued' AND run_at > ${arg(2, 'bigint')}`;

/** A job's delivery bookkeeping, not its event: a dead callback's retry carries its event's id and first dead letter. */
const BOOKKEEPING = new Set(['eventId', 'deadSince']);

/**
 * Whether a NewJob with `unlessRepeat` would only repeat the latest of the subject's jobs of its kind: the same payload
 * otherwise (flat values, delivery bookkeeping aside; jsonb reorders keys) in a job that has not died. Latest by the
 * payload value `unlessRepeat` names (a callback's is its results' fetchedAt, the order the stored results themselves
 * go by), then, for equal values or jobs from before it was written, by when they were queued. A dead one is repeated,
 * so a refresh can send it again. A repeat of a job still queued names it (`queued`), to be run now rather than
 * later: a refresh while a dead callback waits out its hour sends that event, under its own id, instead of a second
 * copy under another.
 */
export function repeatsLatest(j: NewJob, statusBefore: string, rows: () => Pick<JobRow, 'id' | 'payload' | 'state'>[]): false | { queued: string | null } {
  const order = j.unlessRepeat;
  // Over a failure the customer was told of, stored results are news whatever was announced before it.
  if (!order || statusBefore === 'failed') return false;
  const payloadOf = (r: Pick<JobRow, 'payload'>) => (typeof r.payload === 'string' ? (JSON.parse(r.payload) as Record<string, unknown>) : r.payload);
  const rank = (p: Record<string, unknown>) => (typeof p[order] === 'number' ? (p[order] as number) : -Infinity);
  // Compared with the latest job of the same event (`event` in the payload): another event's (a failure's) times are
  // not on the same scale. saveResults never takes a store over a failure for a repeat.
  const kind = j.payload?.event;
  let latest: { id: string; payload: Record<string, unknown>; state: string } | undefined;
  for (const r of rows()) {
    const payload = payloadOf(r);
    if (payload.event !== kind) continue;
    if (!latest || rank(payload) >= rank(latest.payload)) latest = { id: r.id, payload, state: r.state };
  }
  if (!latest || latest.state === 'dead') return false;
  const prev = latest.payload;
  const next = j.payload ?? {};
  const compared = (p: Record<string, unknown>) => Object.keys(p).filter((k) => k !== order && !BOOKKEEPING.has(k));
  const keys = compared(next);
  const same = keys.length === compared(prev).length && keys.every((k) => Object.is(prev[k], next[k]));
  return same && { queued: latest.state === 'queued' ? latest.id : null };
}

/**
 * Store.unfollowedDeadResults, the same on both engines (jobs_state_updated finds the dead jobs by age; jobs_subject
 * the session's others). Parameters: since, before, limit.
 */
export function unfollowedDeadResultsSql(arg: SqlArg): string {
  return `SELECT j.* FROM jobs j JOIN sessions s ON s.interview_id = j.subject
    WHERE j.state = 'dead' AND j.updated_at >= ${arg(0, 'bigint')} AND j.updated_at < ${arg(1, 'bigint')} AND j.kind = 'results'
      AND s.results_status = 'pending' AND s.next_poll_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.subject = j.subject AND o.kind = 'results'
        AND (o.state IN ('queued', 'running') OR (o.state = 'dead' AND (o.updated_at > j.updated_at OR (o.updated_at = j.updated_at AND o.id > j.id)))))
    ORDER BY j.updated_at, j.id LIMIT ${arg(2, 'int')}`;
}

export function toJob(r: JobRow): Job {
  return {
    id: String(r.id),
    kind: r.kind,
    subject: r.subject,
    payload: typeof r.payload === 'string' ? (JSON.parse(r.payload) as Record<string, unknown>) : r.payload,
    state: r.state as JobState,
    attempts: num(r.attempts),
    runAt: num(r.run_at),
    leaseOwner: r.lease_owner,
    leaseExpiresAt: numOrNull(r.lease_expires_at),
    lastError: r.last_error,
    createdAt: num(r.created_at),
  };
}

/** Claim order: due time first, then insertion, then id for a total order. */
export function byRunAt(a: Job, b: Job): number {
  return a.runAt - b.runAt || a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

export interface AuditRow {
  id: Num;
  kind: string;
  subject: string;
  detail: string | Record<string, unknown>;
  at: Num;
}

export function toAudit(r: AuditRow): AuditEntry {
  return {
    id: String(r.id),
    kind: r.kind,
    subject: r.subject,
    detail: typeof r.detail === 'string' ? (JSON.parse(r.detail) as Record<string, unknown>) : r.detail,
    at: num(r.at),
  };
}

/**
 * Jobs counted by state. Without the done ones (the metrics' queue depth), only the (state, run_at) index's ranges of
 * the other states are read: the done jobs, kept for RETENTION_DAYS, grow to millions, and on SQLite a scan of them
 * would hold the event loop at every scrape.
 */
export function countJobsSql(done: boolean): string {
  return done ? 'SELECT state, COUNT(*) AS n FROM jobs GROUP BY state' : "SELECT state, COUNT(*) AS n FROM jobs WHERE state IN ('queued', 'running', 'dead') GROUP BY state";
}

export function emptyCounts(): Record<JobState, number> {
  return { queued: 0, running: 0, done: 0, dead: 0 };
}

// Keyset cursor: the (updatedAt, interviewId) of the last row served. Opaque to callers.
export function encodeCursor(s: Pick<SessionRecord, 'updatedAt' | 'interviewId'>): string {
  return Buffer.from(JSON.stringify([s.updatedAt, s.interviewId]), 'utf8').toString('base64url');
}

// A cursor is decoded from caller input: its values are checked to be ones this API could have handed out, so that a
// forged one is a 400 on both engines instead of whatever the database makes of it (PostgreSQL refuses a fraction or
// 1e300 as bigint and a NUL in text, with an error that would surface as a 500).
const MAX_CURSOR_ID_LENGTH = 256;
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

export function decodeCursor(cursor: string): { updatedAt: number; interviewId: string } {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw new InvalidCursorError();
  }
  if (!Array.isArray(v) || v.length !== 2) throw new InvalidCursorError();
  const [updatedAt, interviewId] = v as unknown[];
  if (typeof updatedAt !== 'number' || !Number.isSafeInteger(updatedAt) || updatedAt < 0) throw new InvalidCursorError();
  if (typeof interviewId !== 'string' || interviewId.length === 0 || interviewId.length > MAX_CURSOR_ID_LENGTH || CONTROL_CHARS.test(interviewId)) {
    throw new InvalidCursorError();
  }
  return { updatedAt, interviewId };
}

// Every JSON column (event and job payloads, audit details) is written through this. PostgreSQL's jsonb refuses
// \u0000 and lone surrogates (\ud800 without its pair) anywhere, values and keys; SQLite would keep them. Both engines
// store U+FFFD in their place so that a row reads back the same on either. JSON.stringify writes both as \u escapes,
// so the common case (neither) pays one scan of the text.
export function jsonText(value: unknown): string {
  const text = JSON.stringify(value ?? {});
  if (!/\\u(0000|d[89a-f])/i.test(text)) return text;
  return JSON.stringify(storable(JSON.parse(text)));
}

// String.prototype.toWellFormed (Node 20) is ES2024, past this project's ES2022 lib.
const storableText = (s: string) => (s as string & { toWellFormed(): string }).toWellFormed().replaceAll('\u0000', '\uFFFD');

function storable(v: unknown): unknown {
  if (typeof v === 'string') return storableText(v);
  if (Array.isArray(v)) return v.map(storable);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [storableText(k), storable(x)]));
  }
  return v;
}

export function clampLimit(limit: number, max = 1000): number {
  const n = Math.floor(Number(limit));
  if (!Number.isFinite(n) || n < 1) return 1;
  return Math.min(n, max);
}

export function newId(): string {
  return randomUUID();
}

/** The inbox key of a webhook: one event per session and status (a redelivery is a duplicate). */
export function webhookEventKey(interviewId: string, onboardingStatus: string): string {
  return `${interviewId}:${onboardingStatus}`;
}

/**
 * A deletion at Incode due at `runAt`: asked for now, due at the end of the retention period, or a retry after an
 * outage dead-lettered one. Each kind has a key of its own, so one asked for now is never folded into one due later.
 */
export function incodeDeleteJob(interviewId: string, runAt: number, kind: 'now' | 'due' | 'retry' = 'now', payload: Record<string, unknown> = {}): NewJob {
  return { kind: 'incode-delete', subject: interviewId, payload, runAt, dedupeKey: `incode-delete:${interviewId}${kind === 'now' ? '' : `:${kind}`}` };
}

/** The deletion at Incode an erasure asked for at `at`: now when that time has come, else due then. */
export function erasureIncodeDeleteJob(interviewId: string, at: number, now: number): NewJob {
  return at <= now ? incodeDeleteJob(interviewId, now) : incodeDeleteJob(interviewId, at, 'due');
}

/** How long after a deletion at Incode was first dead-lettered by an outage it is still tried again. */
export const INCODE_DELETE_RETRY_FOR_MS = 7 * 86_400_000;
/** The wait before a dead-lettered deletion is tried again (a new job, with all its attempts). */
export const INCODE_DELETE_RETRY_AFTER_MS = 3_600_000;

/**
 * A deletion at Incode dead-lettered by an outage (all its attempts used on 5xx, timeouts...), tried again an hour later,
 * for a week from its first dead letter: an erasure the customer was promised is not left to an operator's eye. Null
 * past that week, and for a refusal (a final failure is not retried).
 */
export function incodeDeleteRetryJob(dead: Job, now: number): NewJob | null {
  const since = retryWindowStart(dead, now, INCODE_DELETE_RETRY_FOR_MS);
  return since === null ? null : incodeDeleteJob(dead.subject, now + INCODE_DELETE_RETRY_AFTER_MS, 'retry', { deadSince: since });
}

/**
 * When a dead-lettered job's chain of later retries began (its first dead letter, carried as `deadSince` by each retry
 * job), or null once that is `forMs` ago: the retries stop then.
 */
export function retryWindowStart(dead: Job, now: number, forMs: number): number | null {
  const since = typeof dead.payload.deadSince === 'number' ? dead.payload.deadSince : now;
  return now - since >= forMs ? null : since;
}
