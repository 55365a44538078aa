// The storage interface: one contract, two engines (SQLite, PostgreSQL). Knows no HTTP; of Incode only what its session
// tokens say about themselves (incode/token-claims), to find a session by its token.

export type ResultsStatus = 'pending' | 'ready' | 'failed' | 'unprocessable' | 'erased';
export type Decision = 'approve' | 'decline' | 'review';
export type SessionOrigin = 'broker' | 'external';

export interface StepRecord {
  /** e.g. start, front, back, process-id, selfie, face-match, wait, finish, results */
  step: string;
  outcome: 'ok' | 'rejected' | 'failed' | 'skipped';
  /** Stable reason code, never PII. */
  code?: string | null;
  /** User-facing message (from the capture checks), never PII. */
  message?: string | null;
  at: number;
}

export interface SessionRecord {
  interviewId: string;
  origin: SessionOrigin;
  externalCustomerId: string | null;
  /** Decrypted session token (null when erased or unknown). */
  token: string | null;
  onboardingStatus: string;
  statusRank: number;
  resultsStatus: ResultsStatus;
  decision: Decision | null;
  /** Stable code of the last failure (job dead-lettered, not processable...). */
  lastError: string | null;
  createdAt: number;
  updatedAt: number;
  /**
   * The session's last sign of life: its start, a status move, a new token (a resume), stored results. Not a recorded
   * failure: polling gives up POLL_GIVE_UP_HOURS after it, however often a check failing for good writes its error.
   */
  activeAt: number;
  /** Epoch ms of the next onboarding-status poll, null when polling is over. */
  nextPollAt: number | null;
  pollAttempts: number;
  /** The flow (Incode configurationId) it was started with, when this service started it and knew it. */
  configurationId: string | null;
}

/** A session as GET /sessions lists it: everything but its token. */
export type SessionListing = Omit<SessionRecord, 'token'>;

/** A session's state without its encrypted values (token, customer id). */
export type SessionState = Omit<SessionRecord, 'token' | 'externalCustomerId'>;

export interface NewSession {
  interviewId: string;
  origin: SessionOrigin;
  configurationId?: string | null;
  externalCustomerId?: string | null;
  token?: string | null;
  onboardingStatus?: string;
  statusRank?: number;
  nextPollAt?: number | null;
  /** A resume token for this session, written in the same write (POST /session's one commit). */
  resume?: { tokenHash: string; expiresAt: number };
  /** The claimed Idempotency-Key that created this session: marked done with it, in the same write. */
  idempotency?: IdempotencyRef;
  /**
   * A server-side onboarding's first step (its start), in the same write: a session stored without it could not be told
   * from an app's (POST /session), and one whose captures were cut off before they began would be polled for days.
   */
  firstStep?: StepRecord;
  now: number;
}

/** A resume token just spent: when it would have expired (to restore it), and the status its session had then. */
export interface SpentResumeToken {
  expiresAt: number;
  /** Until when the spend holds the token (restoreResumeToken names it); after it the token may be spent again. */
  heldUntil: number;
  /** When the session was created (the retention purge erases it RETENTION_DAYS later). */
  createdAt: number;
  onboardingStatus: string;
  /** The flow the session was started with, for the resume's start (null when unknown). */
  configurationId: string | null;
  /** Its results had failed for a reason a sign of life undoes (POLLING_GAVE_UP, INCODE_SESSION_GONE): the resume revives it. */
  revivable: boolean;
}

/** When an erased session is to be deleted at Incode (epoch ms), decided from its row; null: not at all. */
export type IncodeDeletionAt = (s: { origin: SessionOrigin; createdAt: number }) => number | null;

export interface IdempotencyRef {
  scope: string;
  key: string;
  /** When the completed key stops replaying (its pending claim had only a short lease). */
  expiresAt: number;
  /**
   * When this request claimed the key (its created_at): completing or releasing the key applies only to this claim,
   * so a request that outlived its lease cannot complete or delete the claim of the retry that took the key over.
   */
  claimedAt: number;
  /** SHA-256 (hex) of the request, kept encrypted with the completed key's response. */
  requestSha256: string;
}

/** A key a request claimed, as the route's create() gets it. */
export type ClaimedKey = IdempotencyRef & {
  /**
   * The latest moment the billable start made under this claim may still be sent (CallContext.sendBefore): early
   * enough to be over before the pending claim lapses, else a retry that took the key over could start a second
   * session beside it.
   */
  sendBefore: number;
};

export interface StoredResults {
  scores: unknown;
  ocr: unknown;
  /** When the fetch started (epoch ms): newer results are those whose fetch started later. */
  fetchedAt: number;
}

export interface InboxEvent {
  /** Idempotency key: webhookEventKey(interviewId, onboardingStatus). */
  key: string;
  interviewId: string;
  onboardingStatus: string;
  /** The webhook body with PII removed (no externalId). */
  payload: Record<string, unknown>;
  receivedAt: number;
}

export type JobState = 'queued' | 'running' | 'done' | 'dead';

export interface Job {
  id: string;
  kind: string;
  subject: string;
  payload: Record<string, unknown>;
  state: JobState;
  attempts: number;
  runAt: number;
  leaseOwner: string | null;
  leaseExpiresAt: number | null;
  lastError: string | null;
  createdAt: number;
}

/** A job as a claim handed it out: the outcome of its attempt is recorded only while that claim still holds it. */
export type JobLease = Pick<Job, 'id' | 'leaseExpiresAt'>;

export interface NewJob {
  kind: string;
  subject: string;
  payload?: Record<string, unknown>;
  runAt: number;
  /** While a job with this key is queued or running, another enqueue with it is a no-op. */
  dedupeKey?: string;
  /**
   * The payload value that orders the subject's jobs of this kind (a number): the job is not queued when the latest
   * of them by it has the same payload otherwise and has not died, an event that would only repeat the last one
   * announced (a refresh that changed nothing). Unlike dedupeKey, a job of an earlier payload still running does not
   * stop it (A, B, then A again is three events).
   */
  unlessRepeat?: string;
  /**
   * Not queued when a job with its dedupe key was done at or after this time (its subject's jobs are searched): a
   * check that read its session before such a job finished would otherwise queue the same work again behind it.
   */
  unlessDoneSince?: number;
}

/** The later retry of a job that dies, queued by failJob with its dead letter. */
export interface LaterRetry extends NewJob {
  /**
   * Queued only while its subject's session exists and is not erased: a job carrying what an erasure clears (an
   * event's decision and status), which must not be written back after it.
   */
  whileLive?: boolean;
}

/** listSessions was given a cursor it did not hand out (or one whose values it could not search by). */
export class InvalidCursorError extends Error {
  constructor() {
    super('invalid cursor');
    this.name = 'InvalidCursorError';
  }
}

export interface ListSessionsQuery {
  onboardingStatus?: string;
  resultsStatus?: ResultsStatus;
  decision?: Decision;
  /** updatedAt >= since (epoch ms) */
  since?: number;
  /** updatedAt < until (epoch ms) */
  until?: number;
  limit: number;
  /** Opaque cursor from a previous page. */
  cursor?: string;
}

export interface AuditEntry {
  id: string;
  kind: string;
  subject: string;
  detail: Record<string, unknown>;
  at: number;
}

/** The final answer of a request made with an Idempotency-Key, kept (encrypted) for its replays. */
export interface IdempotencyAnswer {
  statusCode: number;
  body: unknown;
}

export type IdempotencyClaim =
  | { state: 'new' }
  | { state: 'pending'; requestHash: string }
  | { state: 'done'; requestHash: string; interviewId: string; answer?: IdempotencyAnswer }
  /** Its session was erased: nothing of the request is kept, and the key stays taken until it expires. */
  | { state: 'erased' };

export interface Store {
  readonly engine: 'sqlite' | 'postgres';
  /** Runs pending migrations; idempotent. */
  migrate(): Promise<void>;
  /** PostgreSQL: whether this service logs in as a superuser, which nothing here needs (and which can run programs on the server). */
  connectedAsSuperuser?(): Promise<boolean>;
  close(): Promise<void>;
  ping(): Promise<void>;

  // sessions
  /** Inserts; if the interviewId exists, fills a missing token/externalCustomerId and returns the row. */
  upsertSession(s: NewSession): Promise<SessionRecord>;
  getSession(interviewId: string): Promise<SessionRecord | null>;
  /** A fresh token for the same onboarding (resume): replaces token and hash unless the session was erased. */
  /** false: the session is erased or unknown, and kept no token. */
  replaceToken(interviewId: string, token: string, now: number): Promise<boolean>;
  /**
   * The session whose token this is. A token that names its session (see incode/token-claims) is looked up by that
   * primary key and then matched by hash; any other through the hash index.
   */
  getSessionByToken(token: string): Promise<SessionRecord | null>;
  /**
   * Atomic monotonic move: applies when rank > current rank, or rank == current and equalRankReplaces; never to an
   * erased session (a check that read Incode before the erasure must not write a verdict back). Answers the session's
   * state after it (nothing decrypted, so a value under a retired key cannot fail the change).
   */
  advanceStatus(interviewId: string, status: string, rank: number, equalRankReplaces: boolean, now: number): Promise<{ changed: boolean; session: SessionState | null }>;
  /**
   * status null keeps the current one and records only lastError; an erased session never changes; 'failed' never
   * replaces 'ready' (the stored results stay served, lastError says what failed since). `then` is queued in the same
   * write, only when this write moved the session to `status` (the customer's event of a failure, once per failure).
   * 'pending' applies only over a session polling gave up on (failed, POLLING_GAVE_UP). Answers whether it wrote.
   */
  setResultsStatus(interviewId: string, status: ResultsStatus | null, lastError: string | null, now: number, then?: NewJob): Promise<boolean>;
  /**
   * Stores scores and OCR encrypted, sets resultsStatus=ready and the decision; unless the stored results come from a
   * fetch that started later (results.fetchedAt is when the fetch started), or the session was erased: then nothing
   * changes. Returns whether the results were stored. `then`, a job queued in the same write when they are (the
   * customer's callback), so that neither a crash nor an erasure can come between the two.
   */
  saveResults(interviewId: string, results: StoredResults, decision: Decision, now: number, then?: NewJob): Promise<boolean>;
  getResults(interviewId: string): Promise<StoredResults | null>;
  /** When the stored results' fetch started (null: none stored), without decrypting them. */
  resultsFetchedAt(interviewId: string): Promise<number | null>;
  /** Rejects a cursor it did not hand out with InvalidCursorError. */
  listSessions(q: ListSessionsQuery): Promise<{ items: SessionListing[]; nextCursor: string | null }>;
  /** Sessions with nextPollAt <= now, oldest first; nothing is decrypted, so one unreadable row holds up no poll. */
  sessionsDueForPoll(now: number, limit: number): Promise<SessionState[]>;
  /**
   * Bookkeeping of the poller: not a change of the session, so updatedAt (the order GET /sessions pages in, and what its
   * `since` filter reads) stays as it is; else every poll would move a session past a client's cursor mid-walk.
   * With `seen`, only if the next poll is still that one (compare-and-set): the poller's reschedule must not bring back
   * polling that a check or an abandoned onboarding ended after the poller listed the session.
   */
  schedulePoll(interviewId: string, nextPollAt: number | null, pollAttempts: number, seen?: number | null): Promise<void>;
  /**
   * Ends polling only if the next poll is still the one `seen` says (compare-and-set): a poll another check scheduled
   * meanwhile (a reviewer's verdict still to come) is kept. false when it was.
   */
  stopPolling(interviewId: string, seen: number | null): Promise<boolean>;
  /** Whether it was written: not for an erased (or unknown) session, whose steps the erasure deleted. */
  recordStep(interviewId: string, step: StepRecord): Promise<boolean>;
  /**
   * In the order they were recorded: a session's steps are written one after another, and a wall clock stepped back
   * between two of them must not list the later one first.
   */
  listSteps(interviewId: string): Promise<StepRecord[]>;
  /**
   * Deletes results and token; resultsStatus=erased; writes an audit entry without PII. Returns false if unknown. A
   * session erased before gets no second audit entry, but its steps, inbox events, job payloads and the request digests
   * of the Idempotency-Keys that started it are swept again (a webhook that arrived since).
   *
   * `incodeDeletionAt` (read from the row inside the erasure's transaction) says when to delete the session at Incode
   * too, or null not to: the deletion job is queued in the same transaction as the erasure, so neither can happen
   * without the other (one due now or earlier runs at once).
   */
  eraseSession(interviewId: string, reason: string, now: number, incodeDeletionAt?: IncodeDeletionAt): Promise<boolean>;
  /**
   * Erases PII of sessions created before `createdBefore`, and drops finished jobs and processed events older than it;
   * returns how many sessions. Works in batches for at most a minute; `signal` (a shutdown) stops it between batches.
   * With `deleteAtIncode`, the deletion at Incode of each erased session this service started (origin broker) is
   * queued (an `incode-delete` job) in the same transaction as its erasure, so none is lost between the two.
   */
  purgeExpired(createdBefore: number, now: number, signal?: AbortSignal, deleteAtIncode?: boolean): Promise<number>;
  /**
   * One batch of a key rotation (KeyRotation walks them): the next `limit` rows after `cursor` of the tables with
   * encrypted columns, each value written under another key than the first re-encrypted under it if it is still the
   * value read (one the service changed meanwhile is left to the next pass). A value whose column `waits` (an
   * Idempotency-Key response from before requests were kept as SHA-256) is left as it is and counted in `waiting`.
   * `next` is null after the last table.
   */
  reencryptBatch(cursor: RekeyCursor, limit: number): Promise<RekeyBatch>;
  /** The fingerprints recorded for DATA_ENCRYPTION_KEY ids (key-check.ts), by id. */
  keyFingerprints(): Promise<Map<string, string>>;
  /** Records a key id's fingerprint unless one is recorded already; answers the one kept (this one, or another replica's). */
  recordKeyFingerprint(keyId: string, fingerprint: string, now: number): Promise<string>;
  /** At most one stored value per encrypted column under this key id, with the associated data it is bound to. */
  sampleCiphertexts(keyId: string): Promise<{ value: string; aad: string }[]>;
  /**
   * Drops the copies of deleted and rewritten rows the engine keeps in files of its own, after the sweep: on SQLite the
   * WAL is checkpointed and truncated, without waiting for another process's reader (false then: the next sweep tries
   * again). PostgreSQL has nothing to do here (true): its old row versions and WAL stay until reused or recycled.
   */
  truncateLog(): Promise<boolean>;

  // inbox and jobs
  /** Records the event and enqueues its job in one transaction. false = duplicate (already recorded). */
  recordEvent(e: InboxEvent, job: NewJob): Promise<boolean>;
  markEventProcessed(key: string, now: number): Promise<void>;
  /** Whether a webhook with this key (`<interviewId>:<status>`) was recorded (and not yet purged). */
  hasEvent(key: string): Promise<boolean>;
  enqueueJob(j: NewJob, now: number): Promise<boolean>;
  /** Claims up to `limit` due jobs (queued and due, or running with an expired lease) for `owner`. */
  claimJobs(owner: string, limit: number, leaseMs: number, now: number, subject?: string): Promise<Job[]>;
  /**
   * Marks the job done, or with `forget` deletes its row instead (a routine check whose row would tell nothing later).
   * false when this claim (`job` as claimJobs gave it, and `owner`) no longer holds it: its lease lapsed and the job
   * was claimed again, by another worker or by the same one. Nothing changed then.
   */
  completeJob(job: JobLease, owner: string, now: number, forget?: boolean): Promise<boolean>;
  /**
   * Back to queued at retryAt, or dead when retryAt is null. false when this claim no longer holds the job (as
   * completeJob): nothing changed. A job that dies releases the unprocessed inbox event it
   * was checking (payload.eventKey) in the same write, so Incode's redelivery of that webhook is recorded and checked
   * again instead of dropped as a duplicate; a processed event stays. `then` (a later retry of a dead job) is queued
   * in the same write as the dead letter, and only with it: a process that stops, or a database that fails, right
   * after the dead letter cannot lose it.
   */
  failJob(job: JobLease, owner: string, errorCode: string, retryAt: number | null, now: number, then?: LaterRetry): Promise<boolean>;
  /**
   * Hands a running job back unfinished (a shutdown stopped it): queued again at once with lastError SHUTDOWN, its claim
   * not counted as an attempt unless its previous one was handed back too, so deploys do not use up a job's attempts
   * but a job that stalls every process until it shuts down still does. false when this claim no longer holds it.
   */
  releaseJob(job: JobLease, owner: string, now: number): Promise<boolean>;
  /**
   * Puts a running job off until `runAt` without counting its attempt or changing its last error: it was refused before
   * reaching Incode (an open circuit), which says nothing of the job. false when this claim no longer holds it.
   */
  deferJob(job: JobLease, owner: string, runAt: number, now: number): Promise<boolean>;
  /** With `done: false` (the metrics' queue depth) the done jobs are not counted (0): only the queue is read. */
  countJobs(opts?: { done?: boolean }): Promise<Record<JobState, number>>;
  listJobs(subject: string): Promise<Job[]>;
  /**
   * Results jobs dead-lettered between `since` and `before` whose follow-up never ran (the process died between the
   * dead-letter and it): their session still reads pending, with no poll due and no results job queued or running.
   * The latest such job per session, oldest first.
   */
  unfollowedDeadResults(since: number, before: number, limit: number): Promise<Job[]>;
  /** The queued or running job holding a dedupe key (at most one does), or null. */
  activeJob(dedupeKey: string): Promise<Job | null>;

  // audit
  audit(kind: string, subject: string, detail: Record<string, unknown>, now: number): Promise<void>;
  listAudit(subject?: string): Promise<AuditEntry[]>;

  // idempotency keys and resume tokens (issue 6)
  claimIdempotencyKey(scope: string, key: string, requestHash: string, expiresAt: number, now: number): Promise<IdempotencyClaim>;
  /** Deletes this claim of the key (claimedAt) if it is still pending; another claim of the key is left alone. */
  releaseIdempotencyKey(scope: string, key: string, claimedAt: number): Promise<void>;
  /**
   * Keeps the final answer of a request whose key its session's write already completed (POST /onboardings answers
   * only after its captures), so that a replay gets that answer. This claim only, and only once it is done.
   */
  recordIdempotencyAnswer(idem: IdempotencyRef, interviewId: string, answer: IdempotencyAnswer): Promise<void>;
  /**
   * false: the session is erased or unknown, and took no token. With `newToken` (a resume: Incode's fresh session
   * token), that token replaces the stored one in the same single write, so neither can be kept without the other.
   */
  createResumeToken(tokenHash: string, interviewId: string, expiresAt: number, newToken?: { token: string; now: number }): Promise<boolean>;
  /** Whether tokenHash is this session's current, unexpired resume token (compared in constant time). */
  checkResumeToken(interviewId: string, tokenHash: string, now: number): Promise<boolean>;
  /**
   * Spends the session's resume token if tokenHash is it and unexpired (compared in constant time): of concurrent
   * calls with one token, one gets its expiry and the session's status as it was spent, the others null. The spend
   * holds until `heldUntil`: restoreResumeToken puts the token back after a failure, and a spend never restored (its
   * process died, the database refused the restore) lets the token be spent again once the hold is over.
   */
  consumeResumeToken(interviewId: string, tokenHash: string, now: number, heldUntil: number): Promise<SpentResumeToken | null>;
  /**
   * Puts the token a spend (its `heldUntil`) consumed back, unless a newer one was issued since (even if that one was
   * spent in turn), the token was spent again after the hold, or the session was erased.
   */
  restoreResumeToken(interviewId: string, tokenHash: string, expiresAt: number, heldUntil: number): Promise<void>;
}

/** Where a key rotation's walk is: a table of ENCRYPTED_TABLES and the primary key of the last row it read there. */
export interface RekeyCursor {
  table: number;
  after: string[] | null;
}

export interface RekeyBatch {
  next: RekeyCursor | null;
  /** Values read under another key than the first. */
  found: number;
  /** Of those, re-encrypted under the first key and written. */
  reencrypted: number;
  /** Of those, under a key no longer configured. */
  unreadable: number;
  /** Of those, left under their key until they expire (an Idempotency-Key whose replay still needs it). */
  waiting: number;
  /** The ids of the keys the unreadable values are under (a few), when there are any. */
  missingKeyIds?: string[];
}
