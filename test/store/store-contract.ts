// Shared behaviour suite for every Store engine: each engine's test file supplies a harness over a fresh database.
import { Cipher } from '../../src/store/crypto';
import { MIGRATIONS } from '../../src/store/migrations';
import { statusRank } from '../../src/results/status';
import { ENCRYPTED_TABLES, KeyRotation, REKEY_BATCH, REKEY_START } from '../../src/store/rekey';
import { aad, incodeDeleteJob, sweepLimit } from '../../src/store/rows';
import type { Decision, LaterRetry, NewJob, RekeyCursor, SessionRecord, Store } from '../../src/store/types';

export const K1 = { id: 'k1', key: Buffer.alloc(32, 1) };
export const K2 = { id: 'k2', key: Buffer.alloc(32, 2) };

export interface StoreHarness {
  store: Store;
  /** Another store over the same database (as another process would have); absent for private in-memory databases. */
  open?: (cipher: Cipher) => Promise<Store>;
  /** Raw SQL with `?` placeholders, bypassing the store (to inspect or tamper with rows). */
  exec(sql: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
  /** Everything the database holds, as text, the way an attacker with the file or a dump would see it. */
  dump(): Promise<string>;
  cleanup(): Promise<void>;
}

export type MakeHarness = (cipher: Cipher) => Promise<StoreHarness>;

const T0 = 1_700_000_000_000;
const OCR_NAME = 'Zephyrine Quillfeather-Obradovic';
const EXT_ID = 'customer-ext-7f3a9c';
const TOKEN = 'tok_secret_8e1b2c3d4e5f';

const job = (subject: string, over: Partial<NewJob> = {}): NewJob => ({ kind: 'fetch-results', subject, payload: { n: 1 }, runAt: T0, ...over });

export function runStoreContract(name: string, make: MakeHarness, opts: { shared?: boolean } = {}): void {
  // Cases that open a second store over the same database do not apply to a private in-memory database (it
  // cannot be opened twice): they run on the SQLite-file and PostgreSQL engines, which CI always has.
  const itShared = (opts.shared === false ? () => undefined : it) as typeof it;
  describe(`Store contract: ${name}`, () => {
    let h: StoreHarness;
    let store: Store;
    const extra: Store[] = [];
    const open = async (cipher = new Cipher([K1])) => {
      const s = await h.open!(cipher);
      extra.push(s);
      return s;
    };

    beforeEach(async () => {
      h = await make(new Cipher([K1]));
      store = h.store;
      await store.migrate();
    });

    afterEach(async () => {
      for (const s of extra.splice(0)) await s.close();
      await h.cleanup();
    });

    const session = (id: string, over: Record<string, unknown> = {}) =>
      store.upsertSession({ interviewId: id, origin: 'broker', token: `${TOKEN}-${id}`, externalCustomerId: EXT_ID, now: T0, ...over });

    describe('lifecycle', () => {
      it('pings and migrates idempotently', async () => {
        await store.ping();
        await store.migrate();
        await store.migrate();
        const rows = await h.exec('SELECT version FROM schema_migrations');
        expect(rows.map((r) => Number(r.version))).toEqual(MIGRATIONS.map((m) => m.version));
        expect(['sqlite', 'postgres']).toContain(store.engine);
      });
    });

    describe('sessions', () => {
      it('writes a first step with the session, new or existing, in the same write', async () => {
        const start = { step: 'start' as const, outcome: 'ok' as const, code: null, message: null, at: T0 };
        await store.upsertSession({ interviewId: 'fs1', origin: 'broker', token: 'tok-fs1', firstStep: start, now: T0 });
        expect(await store.listSteps('fs1')).toEqual([start]);
        await store.upsertSession({ interviewId: 'fs2', origin: 'broker', now: T0 });
        expect(await store.listSteps('fs2')).toEqual([]);
        await store.upsertSession({ interviewId: 'fs2', origin: 'broker', token: 'tok-fs2', firstStep: { ...start, at: T0 + 1 }, now: T0 + 1 });
        expect(await store.listSteps('fs2')).toEqual([{ ...start, at: T0 + 1 }]);
        expect((await store.getSession('fs2'))?.token).toBe('tok-fs2');
      });

      it('inserts with defaults and reads back; unknown is null', async () => {
        const s = await store.upsertSession({ interviewId: 'i1', origin: 'external', now: T0 });
        expect(s).toEqual<SessionRecord>({
          interviewId: 'i1',
          origin: 'external',
          externalCustomerId: null,
          token: null,
          onboardingStatus: 'UNKNOWN',
          statusRank: 0,
          resultsStatus: 'pending',
          decision: null,
          lastError: null,
          createdAt: T0,
          updatedAt: T0,
          activeAt: T0,
          nextPollAt: null,
          pollAttempts: 0,
          configurationId: null,
        });
        expect(await store.getSession('i1')).toEqual(s);
        expect(await store.getSession('nope')).toBeNull();
      });

      it("keeps the flow a session was started with, fills it when missing, and a resume's spend tells it", async () => {
        const s = await store.upsertSession({ interviewId: 'i1', origin: 'broker', token: 't1', configurationId: 'flow-a', now: T0 });
        expect(s.configurationId).toBe('flow-a');
        expect((await store.getSession('i1'))?.configurationId).toBe('flow-a');
        await store.upsertSession({ interviewId: 'i1', origin: 'broker', configurationId: 'flow-b', now: T0 + 1 });
        expect((await store.getSession('i1'))?.configurationId).toBe('flow-a');
        await store.upsertSession({ interviewId: 'i2', origin: 'external', now: T0 });
        await store.upsertSession({ interviewId: 'i2', origin: 'broker', configurationId: 'flow-c', now: T0 + 1 });
        expect((await store.getSession('i2'))?.configurationId).toBe('flow-c');
        await store.createResumeToken('h1', 'i1', T0 + 100);
        expect(await store.consumeResumeToken('i1', 'h1', T0 + 2, T0 + 1000)).toEqual({ expiresAt: T0 + 100, heldUntil: T0 + 1000, createdAt: T0, onboardingStatus: 'UNKNOWN', configurationId: 'flow-a', revivable: false });
      });

      it('fills a missing token and externalCustomerId but never overwrites them', async () => {
        await store.upsertSession({ interviewId: 'i1', origin: 'external', now: T0 });
        const filled = await store.upsertSession({ interviewId: 'i1', origin: 'broker', token: 'tA', externalCustomerId: 'eA', now: T0 + 5 });
        expect(filled).toMatchObject({ token: 'tA', externalCustomerId: 'eA', origin: 'external', updatedAt: T0 + 5, createdAt: T0 });
        const again = await store.upsertSession({ interviewId: 'i1', origin: 'broker', token: 'tB', externalCustomerId: 'eB', now: T0 + 9 });
        expect(again).toMatchObject({ token: 'tA', externalCustomerId: 'eA', updatedAt: T0 + 5 });
        expect((await store.getSessionByToken('tA'))?.interviewId).toBe('i1');
        expect(await store.getSessionByToken('tB')).toBeNull();
      });

      it('an upsert that brings nothing new leaves an existing row as it is (origin, poll, status, error, updatedAt)', async () => {
        await session('i1');
        await store.setResultsStatus('i1', null, 'INCODE_UNAVAILABLE', T0 + 2);
        const before = await store.getSession('i1');
        expect(await store.upsertSession({ interviewId: 'i1', origin: 'external', nextPollAt: T0 + 500, now: T0 + 9 })).toEqual(before);
        expect(await store.getSession('i1')).toEqual(before);
      });

      it('replaceToken swaps the token and its hash, but not on an erased session', async () => {
        await store.upsertSession({ interviewId: 'i1', origin: 'broker', token: 'old', now: T0 });
        expect(await store.replaceToken('i1', 'new', T0 + 1)).toBe(true);
        expect((await store.getSession('i1'))?.token).toBe('new');
        expect((await store.getSessionByToken('new'))?.interviewId).toBe('i1');
        expect(await store.getSessionByToken('old')).toBeNull();
        await store.eraseSession('i1', 'test', T0 + 2);
        expect(await store.replaceToken('i1', 'newer', T0 + 3)).toBe(false);
        expect((await store.getSession('i1'))?.token).toBeNull();
        expect(await store.replaceToken('nobody', 'x', T0 + 3)).toBe(false);
      });

      it('createResumeToken with a fresh session token keeps both in one write, and neither on an erased session', async () => {
        await store.upsertSession({ interviewId: 'i1', origin: 'broker', token: 'old', now: T0 });
        expect(await store.createResumeToken('rt-1', 'i1', T0 + 1000, { token: 'fresh', now: T0 + 1 })).toBe(true);
        expect(await store.getSession('i1')).toMatchObject({ token: 'fresh', updatedAt: T0 + 1, activeAt: T0 + 1 });
        expect((await store.getSessionByToken('fresh'))?.interviewId).toBe('i1');
        expect(await store.getSessionByToken('old')).toBeNull();
        expect(await store.checkResumeToken('i1', 'rt-1', T0 + 2)).toBe(true);
        await store.eraseSession('i1', 'test', T0 + 3);
        expect(await store.createResumeToken('rt-2', 'i1', T0 + 1000, { token: 'fresher', now: T0 + 4 })).toBe(false);
        expect(await store.getSession('i1')).toMatchObject({ token: null });
        expect(await store.checkResumeToken('i1', 'rt-2', T0 + 5)).toBe(false);
      });

      it('writes a resume token together with a new session', async () => {
        await store.upsertSession({ interviewId: 'i1', origin: 'broker', token: 't', resume: { tokenHash: 'rh', expiresAt: T0 + 100 }, now: T0 });
        expect(await store.checkResumeToken('i1', 'rh', T0 + 1)).toBe(true);
        expect(await store.checkResumeToken('i1', 'rh', T0 + 100)).toBe(false);
      });

      it('finds a token that names its session by primary key, without a hash-index entry; any other token through the index', async () => {
        // Shaped like Incode's session tokens: a JWT whose externalUserId claim is the interviewId.
        const jwt = (id: string, sig = 'sig') => `eyJhbGciOiJIUzI1NiJ9.${Buffer.from(JSON.stringify({ externalUserId: id, role: 'ACCESS' })).toString('base64url')}.${sig}`;
        await store.upsertSession({ interviewId: 'i1', origin: 'broker', token: jwt('i1'), now: T0 });
        await store.upsertSession({ interviewId: 'i2', origin: 'broker', token: 'opaque-token-i2', now: T0 });
        await store.upsertSession({ interviewId: 'i3', origin: 'broker', token: jwt('i1', 'other'), now: T0 });
        const indexed = await h.exec('SELECT interview_id, token_hash_indexed FROM sessions ORDER BY interview_id');
        expect(indexed.map((r) => [r.interview_id, Number(r.token_hash_indexed)])).toEqual([['i1', 0], ['i2', 1], ['i3', 1]]);
        expect((await store.getSessionByToken(jwt('i1')))?.interviewId).toBe('i1');
        expect((await store.getSessionByToken('opaque-token-i2'))?.interviewId).toBe('i2');
        // A token naming i1 that is not i1's token: the hint misses, the index finds where it belongs.
        expect((await store.getSessionByToken(jwt('i1', 'other')))?.interviewId).toBe('i3');
        // A forged token naming a real session is not that session's token.
        expect(await store.getSessionByToken(jwt('i1', 'forged'))).toBeNull();
        // A new token for the session (resume) moves it out of the index, and the old one no longer matches.
        await store.replaceToken('i2', jwt('i2'), T0 + 1);
        expect((await h.exec('SELECT token_hash_indexed FROM sessions WHERE interview_id = ?', ['i2']))[0]).toEqual({ token_hash_indexed: 0 });
        expect((await store.getSessionByToken(jwt('i2')))?.interviewId).toBe('i2');
        expect(await store.getSessionByToken('opaque-token-i2')).toBeNull();
        // Erasure clears the hash, so neither path finds it.
        await store.eraseSession('i1', 'test', T0 + 2);
        expect(await store.getSessionByToken(jwt('i1'))).toBeNull();
      });

      it('an existing row (a webhook got there first) takes its resume token and completes its Idempotency-Key', async () => {
        await store.upsertSession({ interviewId: 'i1', origin: 'external', now: T0 });
        expect(await store.claimIdempotencyKey('session:a', 'k1', 'h1', T0 + 10, T0)).toEqual({ state: 'new' });
        const s = await store.upsertSession({
          interviewId: 'i1',
          origin: 'broker',
          token: 'tA',
          resume: { tokenHash: 'rh', expiresAt: T0 + 100 },
          idempotency: { scope: 'session:a', key: 'k1', expiresAt: T0 + 1000, claimedAt: T0, requestSha256: 'sha-h1' },
          now: T0 + 1,
        });
        expect(s).toMatchObject({ interviewId: 'i1', origin: 'external', token: 'tA' });
        expect(await store.checkResumeToken('i1', 'rh', T0 + 2)).toBe(true);
        expect(await store.claimIdempotencyKey('session:a', 'k1', 'h1', T0 + 10, T0 + 500)).toEqual({ state: 'done', requestHash: 'sha-h1', interviewId: 'i1' });
      });

      it("keeps a done key's final answer for its replays, for that claim only and only once done", async () => {
        const idem = { scope: 'onboarding:a', key: 'k2', expiresAt: T0 + 1000, claimedAt: T0, requestSha256: 'sha-h2' };
        const answer = { statusCode: 422, body: { code: 'CAPTURE_REJECTED', step: 'front', interviewId: 'i2' } };
        expect(await store.claimIdempotencyKey('onboarding:a', 'k2', 'h2', T0 + 10, T0)).toEqual({ state: 'new' });
        // Still pending (no session written it done): nothing is kept.
        await store.recordIdempotencyAnswer(idem, 'i2', answer);
        expect(await store.claimIdempotencyKey('onboarding:a', 'k2', 'h2', T0 + 10, T0 + 1)).toEqual({ state: 'pending', requestHash: 'h2' });
        await store.upsertSession({ interviewId: 'i2', origin: 'broker', token: 't2', idempotency: idem, now: T0 + 2 });
        expect(await store.claimIdempotencyKey('onboarding:a', 'k2', 'h2', T0 + 10, T0 + 3)).toEqual({ state: 'done', requestHash: 'sha-h2', interviewId: 'i2' });
        // Another claim of the key (one that took it over after the lease) is not this one's to answer for.
        await store.recordIdempotencyAnswer({ ...idem, claimedAt: T0 - 1 }, 'i2', { statusCode: 500, body: {} });
        expect(await store.claimIdempotencyKey('onboarding:a', 'k2', 'h2', T0 + 10, T0 + 4)).toEqual({ state: 'done', requestHash: 'sha-h2', interviewId: 'i2' });
        await store.recordIdempotencyAnswer(idem, 'i2', answer);
        expect(await store.claimIdempotencyKey('onboarding:a', 'k2', 'h2', T0 + 10, T0 + 4)).toEqual({ state: 'done', requestHash: 'sha-h2', interviewId: 'i2', answer });
        // Kept encrypted, like every response.
        expect(JSON.stringify(await h.exec('SELECT * FROM idempotency_keys'))).not.toContain('CAPTURE_REJECTED');
      });

      it('never downgrades the status on upsert, but raises it', async () => {
        await store.upsertSession({ interviewId: 'i1', origin: 'broker', onboardingStatus: 'ONBOARDING_FINISHED', statusRank: 5, now: T0 });
        const low = await store.upsertSession({ interviewId: 'i1', origin: 'broker', onboardingStatus: 'UNKNOWN', statusRank: 0, now: T0 + 1 });
        expect(low).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', statusRank: 5 });
        const high = await store.upsertSession({ interviewId: 'i1', origin: 'broker', onboardingStatus: 'MANUAL_REVIEW_APPROVED', statusRank: 6, now: T0 + 2 });
        expect(high).toMatchObject({ onboardingStatus: 'MANUAL_REVIEW_APPROVED', statusRank: 6 });
      });

      itShared('advanceStatus moves a session whose encrypted values are under a key no longer configured, alike on every engine', async () => {
        await session('i1');
        const onlyK2 = await open(new Cipher([K2]));
        const r = await onlyK2.advanceStatus('i1', 'ONBOARDING_FINISHED', 9, false, T0 + 1);
        expect(r).toMatchObject({ changed: true, session: { interviewId: 'i1', onboardingStatus: 'ONBOARDING_FINISHED', statusRank: 9 } });
        expect(r.session).not.toHaveProperty('token');
        expect((await onlyK2.advanceStatus('i1', 'ONBOARDING_FINISHED', 9, false, T0 + 2)).changed).toBe(false);
        expect(await store.getSession('i1')).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', token: `${TOKEN}-i1` });
      });

      itShared('lists a session whose token is under a key no longer configured: the list decrypts no token, which it does not serve', async () => {
        await store.upsertSession({ interviewId: 'i1', origin: 'broker', token: `${TOKEN}-i1`, now: T0 });
        const onlyK2 = await open(new Cipher([K2]));
        const { items } = await onlyK2.listSessions({ limit: 10 });
        expect(items).toEqual([expect.objectContaining({ interviewId: 'i1', externalCustomerId: null })]);
        expect(items[0]).not.toHaveProperty('token');
      });

      it('activeAt moves with signs of life (a status move, a new token, stored results), not with a recorded failure or a poll', async () => {
        await session('i1', { nextPollAt: T0 + 10 });
        const at = async () => (await store.getSession('i1'))!.activeAt;
        expect(await at()).toBe(T0);
        await store.setResultsStatus('i1', null, 'INCODE_UNAUTHORIZED', T0 + 5);
        await store.schedulePoll('i1', T0 + 100, 3);
        expect(await at()).toBe(T0);
        expect((await store.getSession('i1'))!.updatedAt).toBe(T0 + 5);
        await store.advanceStatus('i1', 'ID_VALIDATION_FINISHED', 1, true, T0 + 10);
        expect(await at()).toBe(T0 + 10);
        // The same status again is no move.
        await store.advanceStatus('i1', 'ID_VALIDATION_FINISHED', 1, true, T0 + 15);
        expect(await at()).toBe(T0 + 10);
        await store.replaceToken('i1', 'tok-2', T0 + 20);
        expect(await at()).toBe(T0 + 20);
        await store.saveResults('i1', { scores: { s: 1 }, ocr: {}, fetchedAt: T0 + 25 }, 'review', T0 + 30);
        expect(await at()).toBe(T0 + 30);
        // A row from before the column (schema version 8) reads its updatedAt, and a recorded failure, which moves
        // updatedAt, keeps the sign of life it had.
        await h.exec('UPDATE sessions SET active_at = NULL WHERE interview_id = ?', ['i1']);
        const legacy = (await store.getSession('i1'))!;
        expect(legacy.activeAt).toBe(legacy.updatedAt);
        await store.setResultsStatus('i1', null, 'INCODE_UNAUTHORIZED', T0 + 500);
        expect(await store.getSession('i1')).toMatchObject({ updatedAt: T0 + 500, activeAt: legacy.updatedAt });
      });

      it('advanceStatus is monotonic', async () => {
        await session('i1');
        let r = await store.advanceStatus('i1', 'ID_VALIDATION_FINISHED', 2, true, T0 + 1);
        expect(r.changed).toBe(true);
        expect(r.session).toMatchObject({ onboardingStatus: 'ID_VALIDATION_FINISHED', statusRank: 2, updatedAt: T0 + 1 });
        // Progress statuses share a rank and replace each other when allowed.
        r = await store.advanceStatus('i1', 'FACE_VALIDATION_FINISHED', 2, true, T0 + 2);
        expect(r).toMatchObject({ changed: true, session: { onboardingStatus: 'FACE_VALIDATION_FINISHED' } });
        // Same status again is not a change.
        r = await store.advanceStatus('i1', 'FACE_VALIDATION_FINISHED', 2, true, T0 + 3);
        expect(r.changed).toBe(false);
        r = await store.advanceStatus('i1', 'POST_PROCESSING_FINISHED', 2, false, T0 + 3);
        expect(r).toMatchObject({ changed: false, session: { onboardingStatus: 'FACE_VALIDATION_FINISHED', updatedAt: T0 + 2 } });
        r = await store.advanceStatus('i1', 'ONBOARDING_FINISHED', 9, false, T0 + 4);
        expect(r.changed).toBe(true);
        // A final status is never overwritten by a lower rank, replace flag or not.
        r = await store.advanceStatus('i1', 'ID_VALIDATION_FINISHED', 2, true, T0 + 5);
        expect(r).toMatchObject({ changed: false, session: { onboardingStatus: 'ONBOARDING_FINISHED', statusRank: 9 } });
        r = await store.advanceStatus('i1', 'EXPIRED', 9, false, T0 + 6);
        expect(r).toMatchObject({ changed: false, session: { onboardingStatus: 'ONBOARDING_FINISHED' } });
        expect(await store.advanceStatus('nope', 'X', 1, true, T0)).toEqual({ changed: false, session: null });
      });

      it('concurrent advanceStatus calls end at the highest rank', async () => {
        await session('i1');
        const ranks = [3, 7, 1, 5, 9, 2, 8, 4, 6];
        const out = await Promise.all(ranks.map((r) => store.advanceStatus('i1', `S${r}`, r, false, T0 + r)));
        expect(out.some((o) => o.changed)).toBe(true);
        expect(await store.getSession('i1')).toMatchObject({ onboardingStatus: 'S9', statusRank: 9 });
      });

      it('setResultsStatus keeps POLLING_GAVE_UP when it records only an error, and not when it sets a status', async () => {
        await session('i1');
        await store.setResultsStatus('i1', 'failed', 'POLLING_GAVE_UP', T0 + 1);
        await store.setResultsStatus('i1', null, 'INCODE_UNAVAILABLE', T0 + 2);
        expect(await store.getSession('i1')).toMatchObject({ resultsStatus: 'failed', lastError: 'POLLING_GAVE_UP', updatedAt: T0 + 2 });
        await store.setResultsStatus('i1', 'pending', null, T0 + 3);
        expect(await store.getSession('i1')).toMatchObject({ resultsStatus: 'pending', lastError: null });
      });

      it('setResultsStatus records status and last error', async () => {
        await session('i1');
        await store.setResultsStatus('i1', 'failed', 'E_FETCH', T0 + 10);
        expect(await store.getSession('i1')).toMatchObject({ resultsStatus: 'failed', lastError: 'E_FETCH', updatedAt: T0 + 10 });
        await store.setResultsStatus('nope', 'failed', null, T0);
        // null keeps the status as it is now and records only the error; an erased session does not change at all.
        await store.setResultsStatus('i1', 'ready', null, T0 + 11);
        await store.setResultsStatus('i1', null, 'E_CALLBACK', T0 + 12);
        expect(await store.getSession('i1')).toMatchObject({ resultsStatus: 'ready', lastError: 'E_CALLBACK', updatedAt: T0 + 12 });
        await store.eraseSession('i1', 'test', T0 + 13);
        await store.setResultsStatus('i1', null, 'E_LATE', T0 + 14);
        expect(await store.getSession('i1')).toMatchObject({ resultsStatus: 'erased', lastError: null, updatedAt: T0 + 13 });
      });

      it('setResultsStatus sets pending again only over a session polling gave up on (results stored meanwhile stay ready)', async () => {
        const ids = ['gave-up', 'stored', 'rejected', 'no-error'];
        for (const id of ids) await session(id);
        await store.setResultsStatus('gave-up', 'failed', 'POLLING_GAVE_UP', T0 + 1);
        await store.setResultsStatus('rejected', 'failed', 'CAPTURE_REJECTED', T0 + 1);
        await store.setResultsStatus('no-error', 'failed', null, T0 + 1);
        await store.saveResults('stored', { scores: { overall: 1 }, ocr: {}, fetchedAt: T0 }, 'approve', T0 + 1);
        await store.setResultsStatus('stored', null, 'INCODE_TIMEOUT', T0 + 2);
        const before = new Map<string, unknown>();
        for (const id of ids) before.set(id, await store.getSession(id));
        const wrote: boolean[] = [];
        for (const id of ids) wrote.push(await store.setResultsStatus(id, 'pending', null, T0 + 3));
        expect(wrote).toEqual([true, false, false, false]);
        expect(await store.getSession('gave-up')).toMatchObject({ resultsStatus: 'pending', lastError: null, updatedAt: T0 + 3 });
        // The others are not written at all (their updatedAt too: a listing by change would show them changed).
        for (const id of ['stored', 'rejected', 'no-error']) expect(await store.getSession(id)).toEqual(before.get(id));
        expect(await store.getSession('stored')).toMatchObject({ resultsStatus: 'ready', decision: 'approve', lastError: 'INCODE_TIMEOUT' });
      });

      it('setResultsStatus never turns stored results (ready) into failed, but records the error', async () => {
        // A results job dying after another one stored the results (a refresh, an earlier status) must not hide them.
        await session('i1');
        await store.saveResults('i1', { scores: { overall: 1 }, ocr: {}, fetchedAt: T0 }, 'approve', T0 + 1);
        await store.setResultsStatus('i1', 'failed', 'INCODE_UNAVAILABLE', T0 + 2);
        expect(await store.getSession('i1')).toMatchObject({ resultsStatus: 'ready', decision: 'approve', lastError: 'INCODE_UNAVAILABLE', updatedAt: T0 + 2 });
        expect((await store.listSessions({ limit: 5, resultsStatus: 'ready' })).items.map((s) => s.interviewId)).toEqual(['i1']);
        // Other moves out of ready (e.g. erasure) still apply, and a session without results still fails.
        await session('i2');
        await store.setResultsStatus('i2', 'failed', 'INCODE_UNAVAILABLE', T0 + 3);
        expect(await store.getSession('i2')).toMatchObject({ resultsStatus: 'failed', lastError: 'INCODE_UNAVAILABLE' });
        await store.eraseSession('i1', 'test', T0 + 4);
        expect(await store.getSession('i1')).toMatchObject({ resultsStatus: 'erased' });
      });

      it('saves results encrypted and reads them back', async () => {
        await session('i1');
        expect(await store.getResults('i1')).toBeNull();
        const ocr = { fullName: OCR_NAME, birthDate: '1990-01-01' };
        await store.saveResults('i1', { scores: { overall: 93.5 }, ocr, fetchedAt: T0 + 20 }, 'approve', T0 + 21);
        expect(await store.getResults('i1')).toEqual({ scores: { overall: 93.5 }, ocr, fetchedAt: T0 + 20 });
        expect(await store.getSession('i1')).toMatchObject({ resultsStatus: 'ready', decision: 'approve', lastError: null, updatedAt: T0 + 21 });
        const [row] = await h.exec('SELECT key_id, ocr_enc FROM results WHERE interview_id = ?', ['i1']);
        expect(row.key_id).toBe('k1');
        expect(String(row.ocr_enc)).toMatch(/^v1\.k1\./);
        // Saving again replaces.
        await store.saveResults('i1', { scores: { overall: 10 }, ocr: null, fetchedAt: T0 + 30 }, 'decline', T0 + 31);
        expect(await store.getResults('i1')).toEqual({ scores: { overall: 10 }, ocr: null, fetchedAt: T0 + 30 });
        await expect(store.saveResults('nope', { scores: {}, ocr: {}, fetchedAt: T0 }, 'review', T0)).rejects.toThrow(/unknown session/);
      });

      it('keeps the results whose fetch started last: an older fetch saved later replaces nothing', async () => {
        // A slow job for an older status (its fetch started first) finishing after a newer status's job.
        await session('i1');
        expect(await store.saveResults('i1', { scores: { overall: 'MANUAL_OK' }, ocr: { v: 2 }, fetchedAt: T0 + 50 }, 'approve', T0 + 60)).toBe(true);
        expect(await store.saveResults('i1', { scores: { overall: 'MANUAL_PENDING' }, ocr: { v: 1 }, fetchedAt: T0 + 40 }, 'review', T0 + 70)).toBe(false);
        expect(await store.getResults('i1')).toEqual({ scores: { overall: 'MANUAL_OK' }, ocr: { v: 2 }, fetchedAt: T0 + 50 });
        expect(await store.resultsFetchedAt('i1')).toBe(T0 + 50);
        expect(await store.resultsFetchedAt('none')).toBeNull();
        expect(await store.getSession('i1')).toMatchObject({ resultsStatus: 'ready', decision: 'approve', updatedAt: T0 + 60 });
        // A fetch started at the same time or later replaces.
        expect(await store.saveResults('i1', { scores: { overall: 'OK' }, ocr: { v: 3 }, fetchedAt: T0 + 50 }, 'approve', T0 + 80)).toBe(true);
        expect(await store.getResults('i1')).toEqual({ scores: { overall: 'OK' }, ocr: { v: 3 }, fetchedAt: T0 + 50 });
        await store.saveResults('i1', { scores: { overall: 'FAIL' }, ocr: { v: 4 }, fetchedAt: T0 + 90 }, 'decline', T0 + 95);
        expect(await store.getResults('i1')).toEqual({ scores: { overall: 'FAIL' }, ocr: { v: 4 }, fetchedAt: T0 + 90 });
        expect(await store.getSession('i1')).toMatchObject({ resultsStatus: 'ready', decision: 'decline', updatedAt: T0 + 95 });
      });

      it('moves updatedAt strictly up with each change, even from a writer whose clock is behind (events are ordered by it)', async () => {
        await session('i1');
        await store.saveResults('i1', { scores: { overall: 'OK' }, ocr: {}, fetchedAt: T0 + 5 }, 'approve', T0 + 10);
        // Another replica, its clock 3 ms behind, stores newer results: two states, never one time.
        expect(await store.saveResults('i1', { scores: { overall: 'FAIL' }, ocr: {}, fetchedAt: T0 + 6 }, 'decline', T0 + 7)).toBe(true);
        expect(await store.getSession('i1')).toMatchObject({ decision: 'decline', updatedAt: T0 + 11 });
        expect((await store.advanceStatus('i1', 'MANUAL_REVIEW_APPROVED', 10, false, T0 + 8)).session).toMatchObject({ updatedAt: T0 + 12 });
        await store.setResultsStatus('i1', 'failed', 'E_SKEW', T0 + 9);
        expect(await store.getSession('i1')).toMatchObject({ updatedAt: T0 + 13 });
      });

      it('queues the job given with stored results in the same write, and none when they are not stored', async () => {
        const callback = (id: string, decision: string): NewJob => ({ kind: 'callback', subject: id, payload: { onboardingStatus: 'ONBOARDING_FINISHED', decision }, runAt: T0, dedupeKey: `callback:${id}:ONBOARDING_FINISHED:${decision}` });
        await session('i1');
        expect(await store.saveResults('i1', { scores: {}, ocr: {}, fetchedAt: T0 + 50 }, 'approve', T0 + 60, callback('i1', 'approve'))).toBe(true);
        // An older fetch replaces nothing, and announces nothing.
        expect(await store.saveResults('i1', { scores: {}, ocr: {}, fetchedAt: T0 + 40 }, 'decline', T0 + 70, callback('i1', 'decline'))).toBe(false);
        expect((await store.listJobs('i1')).map((j) => j.payload.decision)).toEqual(['approve']);
        // An erased session: nothing stored, no job naming a decision.
        await session('i2');
        await store.eraseSession('i2', 'test', T0 + 80);
        expect(await store.saveResults('i2', { scores: {}, ocr: {}, fetchedAt: T0 + 90 }, 'decline', T0 + 95, callback('i2', 'decline'))).toBe(false);
        expect(await store.listJobs('i2')).toEqual([]);
      });

      it('setResultsStatus queues its job only when this write moves the session to the status given', async () => {
        const event = (code: string, at: number): NewJob => ({ kind: 'callback', subject: 'i1', payload: { event: 'results_failed', resultsStatus: 'failed', code, fetchedAt: at }, runAt: at });
        const events = async (id = 'i1') => (await store.listJobs(id)).filter((j) => j.kind === 'callback').map((j) => j.payload.code);
        await session('i1');
        await store.setResultsStatus('i1', 'failed', 'SESSION_EXPIRED', T0 + 1, event('SESSION_EXPIRED', T0 + 1));
        expect(await events()).toEqual(['SESSION_EXPIRED']);
        // Failed again (another cause): no second event for the same failure.
        await store.setResultsStatus('i1', 'failed', 'INCODE_UNAVAILABLE', T0 + 2, event('INCODE_UNAVAILABLE', T0 + 2));
        expect(await events()).toEqual(['SESSION_EXPIRED']);
        // Results stored since, then a failure that cannot replace them: no event either.
        await session('i2');
        await store.saveResults('i2', { scores: {}, ocr: {}, fetchedAt: T0 + 3 }, 'approve', T0 + 3);
        await store.setResultsStatus('i2', 'failed', 'INCODE_UNAVAILABLE', T0 + 4, { ...event('INCODE_UNAVAILABLE', T0 + 4), subject: 'i2' });
        expect(await events('i2')).toEqual([]);
        expect(await store.getSession('i2')).toMatchObject({ resultsStatus: 'ready', lastError: 'INCODE_UNAVAILABLE' });
        // An unknown or erased session takes none.
        await store.setResultsStatus('nobody', 'failed', 'X', T0 + 5, { ...event('X', T0 + 5), subject: 'nobody' });
        expect(await store.listJobs('nobody')).toEqual([]);
      });

      it('a job unlessRepeat is not queued when it repeats the latest one of its kind, alive; a state that comes back is queued even while the first runs', async () => {
        // Ordered by the payload's fetchedAt, never by when (or on which replica's clock) each was queued: here a later
        // event is queued with an earlier time.
        const event = (decision: Decision, fetchedAt: number) =>
          [{ scores: {}, ocr: {}, fetchedAt }, decision, T0 + 1000 - fetchedAt, { kind: 'callback', subject: 'i1', payload: { onboardingStatus: 'ONBOARDING_FINISHED', decision, fetchedAt }, runAt: T0, unlessRepeat: 'fetchedAt' }] as const;
        const decisions = async () => (await store.listJobs('i1')).filter((j) => j.kind === 'callback').map((j) => `${j.payload.decision}:${j.state}`).sort();
        await session('i1');
        // Another kind of job of the session is not what a repeat is measured against.
        await store.enqueueJob({ kind: 'results', subject: 'i1', payload: { onboardingStatus: 'ONBOARDING_FINISHED', decision: 'review' }, runAt: T0 }, T0);
        expect(await store.saveResults('i1', ...event('approve', T0 + 10))).toBe(true);
        // Stored again unchanged (a refresh): no second event.
        expect(await store.saveResults('i1', ...event('approve', T0 + 20))).toBe(true);
        expect(await decisions()).toEqual(['approve:queued']);
        const claimed = await store.claimJobs('w', 10, 60_000, T0 + 25);
        expect(claimed.map((j) => j.kind).sort()).toEqual(['callback', 'results']);
        // A, B, A: the third is an event of its own although the first is still running.
        expect(await store.saveResults('i1', ...event('review', T0 + 30))).toBe(true);
        expect(await store.saveResults('i1', ...event('approve', T0 + 40))).toBe(true);
        expect(await decisions()).toEqual(['approve:queued', 'approve:running', 'review:queued']);
        // The latest event died (its receiver gave up): storing the same state again queues it again.
        const again = await store.claimJobs('w', 10, 60_000, T0 + 45);
        const third = again.find((j) => j.payload.fetchedAt === T0 + 40)!;
        expect(await store.failJob(third, 'w', 'CALLBACK_HTTP_500', null, T0 + 46)).toBe(true);
        expect(await store.saveResults('i1', ...event('approve', T0 + 50))).toBe(true);
        expect(await decisions()).toEqual(['approve:dead', 'approve:queued', 'approve:running', 'review:running']);
      });

      it('unlessRepeat goes by when jobs were queued where the ordering value is equal or missing (jobs from before it)', async () => {
        await session('i1');
        const legacy = (decision: Decision, at: number) => store.enqueueJob({ kind: 'callback', subject: 'i1', payload: { onboardingStatus: 'ONBOARDING_FINISHED', decision }, runAt: at, dedupeKey: `callback:i1:${decision}` }, at);
        await legacy('approve', T0 + 1);
        await legacy('review', T0 + 2);
        const save = (decision: Decision, fetchedAt: number, now: number) =>
          store.saveResults('i1', { scores: {}, ocr: {}, fetchedAt }, decision, now, { kind: 'callback', subject: 'i1', payload: { onboardingStatus: 'ONBOARDING_FINISHED', decision, fetchedAt }, runAt: now, unlessRepeat: 'fetchedAt' });
        const count = async () => (await store.listJobs('i1')).filter((j) => j.kind === 'callback').length;
        // The last event announced was review (the later of the two older jobs): approve is news, review would not be.
        await save('approve', T0 + 10, T0 + 10);
        expect(await count()).toBe(3);
        // Equal fetch times: the later queued one is the latest.
        await save('review', T0 + 10, T0 + 11);
        expect(await count()).toBe(4);
        await save('review', T0 + 10, T0 + 12);
        expect(await count()).toBe(4);
      });

      it('sessionsDueForPoll returns due sessions oldest first; schedulePoll moves them', async () => {
        await session('a', { nextPollAt: T0 + 300 });
        await session('b', { nextPollAt: T0 + 100 });
        await session('c', { nextPollAt: null });
        await session('d', { nextPollAt: T0 + 200 });
        await session('e', { nextPollAt: T0 + 5000 });
        expect((await store.sessionsDueForPoll(T0 + 300, 10)).map((s) => s.interviewId)).toEqual(['b', 'd', 'a']);
        expect((await store.sessionsDueForPoll(T0 + 300, 2)).map((s) => s.interviewId)).toEqual(['b', 'd']);
        await store.schedulePoll('b', T0 + 9000, 3);
        await store.schedulePoll('d', null, 4);
        expect((await store.sessionsDueForPoll(T0 + 300, 10)).map((s) => s.interviewId)).toEqual(['a']);
        // Poller bookkeeping is no change of the session: updatedAt (the listing's order) stays.
        expect(await store.getSession('b')).toMatchObject({ nextPollAt: T0 + 9000, pollAttempts: 3, updatedAt: T0 });
        expect(await store.getSession('d')).toMatchObject({ nextPollAt: null, pollAttempts: 4 });
        // stopPolling ends only the poll the caller saw: one rescheduled meanwhile stays.
        expect(await store.stopPolling('b', T0 + 100)).toBe(false);
        expect((await store.getSession('b'))!.nextPollAt).toBe(T0 + 9000);
        expect(await store.stopPolling('b', T0 + 9000)).toBe(true);
        expect(await store.getSession('b')).toMatchObject({ nextPollAt: null, pollAttempts: 3 });
        expect(await store.stopPolling('b', null)).toBe(true);
        expect(await store.stopPolling('nobody', null)).toBe(false);
        // With the poll it saw, schedulePoll is a compare-and-set too: polling ended meanwhile stays ended.
        await store.schedulePoll('a', T0 + 7000, 1, T0 + 100);
        expect(await store.getSession('a')).toMatchObject({ nextPollAt: T0 + 300, pollAttempts: 0 });
        await store.schedulePoll('b', T0 + 7000, 4, T0 + 9000);
        expect(await store.getSession('b')).toMatchObject({ nextPollAt: null, pollAttempts: 3 });
        await store.schedulePoll('a', T0 + 7000, 1, T0 + 300);
        expect(await store.getSession('a')).toMatchObject({ nextPollAt: T0 + 7000, pollAttempts: 1 });
        await store.schedulePoll('c', T0 + 8000, 2, null);
        expect(await store.getSession('c')).toMatchObject({ nextPollAt: T0 + 8000, pollAttempts: 2 });
      });

      it('records and lists steps in the order they were recorded, whatever their clock said (stepped back between two)', async () => {
        await session('i1');
        await store.recordStep('i1', { step: 'start', outcome: 'ok', at: T0 + 2 });
        await store.recordStep('i1', { step: 'front', outcome: 'rejected', code: 'GLARE', message: 'Too much glare', at: T0 + 1 });
        await store.recordStep('i1', { step: 'front', outcome: 'ok', code: null, at: T0 + 3 });
        expect(await store.listSteps('i1')).toEqual([
          { step: 'start', outcome: 'ok', code: null, message: null, at: T0 + 2 },
          { step: 'front', outcome: 'rejected', code: 'GLARE', message: 'Too much glare', at: T0 + 1 },
          { step: 'front', outcome: 'ok', code: null, message: null, at: T0 + 3 },
        ]);
        expect(await store.listSteps('other')).toEqual([]);
      });
    });

    describe('listSessions', () => {
      it('pages by updatedAt desc, interviewId desc with no duplicates or gaps, stable under inserts', async () => {
        const ids: string[] = [];
        for (let i = 0; i < 23; i++) {
          const id = `s${String(i).padStart(2, '0')}`;
          ids.push(id);
          // Several rows share an updatedAt, so the interviewId tie-break matters.
          await session(id, { now: T0 + Math.floor(i / 4) });
        }
        const expected = [...ids].sort((a, b) => {
          const ua = Math.floor(Number(a.slice(1)) / 4);
          const ub = Math.floor(Number(b.slice(1)) / 4);
          return ub - ua || (a < b ? 1 : -1);
        });
        const seen: string[] = [];
        let cursor: string | undefined;
        let pages = 0;
        do {
          const page = await store.listSessions({ limit: 5, cursor });
          seen.push(...page.items.map((s) => s.interviewId));
          cursor = page.nextCursor ?? undefined;
          if (pages === 1) {
            // Newer sessions arriving mid-walk land before the cursor and must not disturb later pages.
            await session('zz-new-1', { now: T0 + 100 });
            await session('aa-new-2', { now: T0 + 100 });
            // Nor does the poller scheduling a session not yet listed: it stays where it was.
            await store.schedulePoll('s00', T0 + 50_000, 1);
          }
          pages++;
        } while (cursor);
        expect(pages).toBe(5);
        expect(seen).toEqual(expected);
        expect(new Set(seen).size).toBe(23);
        const first = await store.listSessions({ limit: 2 });
        expect(first.items.map((s) => s.interviewId)).toEqual(['zz-new-1', 'aa-new-2']);
        const all = await store.listSessions({ limit: 100 });
        expect(all.items).toHaveLength(25);
        expect(all.nextCursor).toBeNull();
      });

      it('filters by onboardingStatus, resultsStatus, decision, since and until', async () => {
        await session('a', { now: T0, onboardingStatus: 'ONBOARDING_FINISHED', statusRank: 5 });
        await session('b', { now: T0 + 10 });
        await session('c', { now: T0 + 20 });
        await store.saveResults('a', { scores: {}, ocr: {}, fetchedAt: T0 }, 'approve', T0 + 30);
        await store.saveResults('b', { scores: {}, ocr: {}, fetchedAt: T0 }, 'decline', T0 + 40);
        const ids = async (q: object) => (await store.listSessions({ limit: 10, ...q })).items.map((s) => s.interviewId);
        expect(await ids({ onboardingStatus: 'ONBOARDING_FINISHED' })).toEqual(['a']);
        expect(await ids({ resultsStatus: 'ready' })).toEqual(['b', 'a']);
        expect(await ids({ resultsStatus: 'pending' })).toEqual(['c']);
        expect(await ids({ decision: 'decline' })).toEqual(['b']);
        expect(await ids({ since: T0 + 30 })).toEqual(['b', 'a']);
        expect(await ids({ until: T0 + 30 })).toEqual(['c']);
        expect(await ids({ since: T0 + 20, until: T0 + 40, resultsStatus: 'ready' })).toEqual(['a']);
        // Filters and the cursor combine.
        const p1 = await store.listSessions({ limit: 1, resultsStatus: 'ready' });
        const p2 = await store.listSessions({ limit: 1, resultsStatus: 'ready', cursor: p1.nextCursor! });
        expect([p1.items[0].interviewId, p2.items[0].interviewId, p2.nextCursor]).toEqual(['b', 'a', null]);
      });

      it('rejects a forged cursor', async () => {
        await expect(store.listSessions({ limit: 5, cursor: 'not-a-cursor' })).rejects.toThrow(/invalid cursor/);
      });

      it('rejects, as an invalid cursor, well-formed JSON whose values the database would refuse', async () => {
        await session('a');
        const forge = (v: unknown) => Buffer.from(JSON.stringify(v), 'utf8').toString('base64url');
        const bad = [[1.5, 'x'], [1e300, 'x'], [-1, 'x'], [1, ''], [1, 'a\u0000'], [1, 'a\u0007b'], [1, 'x'.repeat(300)], ['1', 'x'], [1, 'x', 2]];
        for (const v of bad) await expect(store.listSessions({ limit: 5, cursor: forge(v) })).rejects.toThrow(/invalid cursor/);
        // The cursor the API hands out keeps working.
        await session('b', { now: T0 + 1 });
        const first = await store.listSessions({ limit: 1 });
        expect((await store.listSessions({ limit: 1, cursor: first.nextCursor! })).items.map((s) => s.interviewId)).toEqual(['a']);
      });
    });

    describe('erasure and retention', () => {
      it('eraseSession removes PII, keeps the row, and audits without PII', async () => {
        await session('i1', { token: TOKEN });
        await store.saveResults('i1', { scores: { s: 1 }, ocr: { fullName: OCR_NAME }, fetchedAt: T0 }, 'approve', T0 + 1);
        expect(await store.createResumeToken('rt-hash', 'i1', T0 + 10_000)).toBe(true);
        await store.recordStep('i1', { step: 'start', outcome: 'ok', at: T0 });
        await store.recordStep('i1', { step: 'face-match', outcome: 'rejected', code: 'FACE_NOT_MATCHED', message: 'The selfie does not match the ID', at: T0 + 1 });
        await store.recordStep('i1', { step: 'results', outcome: 'ok', code: 'decline', at: T0 + 1 });
        await store.setResultsStatus('i1', null, 'INCODE_UNAVAILABLE', T0 + 2);
        // A reviewer's verdict, recorded from its webhook: the status is the decision itself.
        const verdict = { key: 'i1:MANUAL_REVIEW_REJECTED', interviewId: 'i1', onboardingStatus: 'MANUAL_REVIEW_REJECTED', payload: { onboardingStatus: 'MANUAL_REVIEW_REJECTED' }, receivedAt: T0 + 2 };
        expect(await store.recordEvent(verdict, { kind: 'verify', subject: 'i1', payload: { eventKey: verdict.key, claimed: 'MANUAL_REVIEW_REJECTED' }, runAt: T0 + 1e6, dedupeKey: 'verify:i1:MANUAL_REVIEW_REJECTED' })).toBe(true);
        await store.advanceStatus('i1', 'MANUAL_REVIEW_REJECTED', statusRank('MANUAL_REVIEW_REJECTED'), false, T0 + 2);
        await store.enqueueJob(incodeDeleteJob('i1', T0 + 1e6, 'due', { note: 'kept' }), T0 + 2);
        // The customer callback of its decision, still queued, and one of another session.
        const callback = (id: string): NewJob => ({ kind: 'callback', subject: id, payload: { onboardingStatus: 'ONBOARDING_FINISHED', decision: 'decline' }, runAt: T0 + 1e6, dedupeKey: `callback:${id}:ONBOARDING_FINISHED:decline` });
        await session('i2');
        expect(await store.enqueueJob(callback('i1'), T0 + 3)).toBe(true);
        expect(await store.enqueueJob(callback('i2'), T0 + 3)).toBe(true);
        expect(await store.eraseSession('i1', 'user-request', T0 + 50)).toBe(true);
        // Its decision and verdict are gone from the jobs too (payload and dedupe key), but for the deletion at Incode;
        // the other session's job is untouched.
        expect((await store.listJobs('i1')).map((j) => [j.kind, j.payload]).sort()).toEqual([['callback', {}], ['incode-delete', { note: 'kept' }], ['verify', {}]]);
        expect((await h.exec("SELECT dedupe_key FROM jobs WHERE subject = ? AND kind <> 'incode-delete'", ['i1'])).map((r) => r.dedupe_key)).toEqual([null, null]);
        // Nor does its status or its inbox say it: the verdict's rank stays, so nothing moves it back.
        expect(await store.hasEvent(verdict.key)).toBe(false);
        expect(await store.getSession('i1')).toMatchObject({ onboardingStatus: 'MANUAL_REVIEW_VERDICT', statusRank: statusRank('MANUAL_REVIEW_REJECTED') });
        // A webhook after the erasure is recorded (the inbox does not read the session); its check erases again, which
        // sweeps it and its job's payload, with no second audit entry.
        expect(await store.recordEvent({ ...verdict, receivedAt: T0 + 60 }, { kind: 'verify', subject: 'i1', payload: { eventKey: verdict.key, claimed: 'MANUAL_REVIEW_REJECTED' }, runAt: T0 + 60 })).toBe(true);
        expect(await store.hasEvent(verdict.key)).toBe(true);
        expect(await store.eraseSession('i1', 'late-webhook', T0 + 61)).toBe(true);
        expect(await store.hasEvent(verdict.key)).toBe(false);
        expect((await store.listJobs('i1')).filter((j) => j.kind === 'verify').map((j) => j.payload)).toEqual([{}, {}]);
        expect((await store.listAudit('i1')).filter((a) => a.kind === 'erasure')).toHaveLength(1);
        expect((await store.getSession('i1'))!.updatedAt).toBe(T0 + 50);
        // A verdict status an older replica wrote over the erased row is read as the erasure writes it, by erasing again.
        await h.exec("UPDATE sessions SET onboarding_status = 'MANUAL_REVIEW_APPROVED' WHERE interview_id = ?", ['i1']);
        expect(await store.eraseSession('i1', 'again', T0 + 62)).toBe(true);
        expect(await store.getSession('i1')).toMatchObject({ onboardingStatus: 'MANUAL_REVIEW_VERDICT', updatedAt: T0 + 50 });
        // And no check that read Incode before the erasure writes a status after it.
        expect(await store.advanceStatus('i1', 'MANUAL_REVIEW_APPROVED', statusRank('MANUAL_REVIEW_APPROVED') + 1, true, T0 + 60)).toMatchObject({ changed: false, session: { onboardingStatus: 'MANUAL_REVIEW_VERDICT' } });
        expect((await store.listJobs('i2'))[0]).toMatchObject({ payload: { decision: 'decline' } });
        // An erased (or unknown) session takes no new resume token, and says so.
        expect(await store.createResumeToken('rt-later', 'i1', T0 + 10_000)).toBe(false);
        expect(await store.createResumeToken('rt-later', 'nobody', T0 + 10_000)).toBe(false);

        const s = await store.getSession('i1');
        expect(s).toMatchObject({ token: null, externalCustomerId: null, resultsStatus: 'erased', decision: null, lastError: null, updatedAt: T0 + 50 });
        expect(await store.getResults('i1')).toBeNull();
        expect(await store.getSessionByToken(TOKEN)).toBeNull();
        expect(await store.checkResumeToken('i1', 'rt-hash', T0 + 1)).toBe(false);
        // Its steps went with it (their codes said how the checks went), and an onboarding still running records none.
        expect(await store.listSteps('i1')).toEqual([]);
        expect(await store.recordStep('i1', { step: 'results', outcome: 'failed', code: 'RESULTS_ERASED', at: T0 + 55 })).toBe(false);
        expect(await store.listSteps('i1')).toEqual([]);
        expect(await store.recordStep('i2', { step: 'start', outcome: 'ok', at: T0 + 55 })).toBe(true);
        expect(await store.listSteps('i2')).toHaveLength(1);

        const [row] = await h.exec('SELECT token_enc, token_hash, external_customer_id_enc FROM sessions WHERE interview_id = ?', ['i1']);
        expect(row).toEqual({ token_enc: null, token_hash: null, external_customer_id_enc: null });
        expect(await h.exec('SELECT * FROM results WHERE interview_id = ?', ['i1'])).toEqual([]);

        const audit = await store.listAudit('i1');
        expect(audit).toHaveLength(1);
        expect(audit[0]).toMatchObject({ kind: 'erasure', subject: 'i1', detail: { reason: 'user-request' }, at: T0 + 50 });
        const text = JSON.stringify(audit);
        for (const pii of [OCR_NAME, EXT_ID, TOKEN]) expect(text).not.toContain(pii);

        // setResultsStatus cannot mark a session erased without erasing it.
        await expect(store.setResultsStatus('i2', 'erased', null, T0 + 51)).rejects.toThrow(/eraseSession/);
        expect(await store.getSession('i2')).toMatchObject({ resultsStatus: 'pending', token: `${TOKEN}-i2` });

        // Nothing brings PII back afterwards.
        expect(await store.saveResults('i1', { scores: {}, ocr: { fullName: OCR_NAME }, fetchedAt: T0 }, 'approve', T0 + 60)).toBe(false);
        expect(await store.getResults('i1')).toBeNull();
        await store.upsertSession({ interviewId: 'i1', origin: 'broker', token: 'again', externalCustomerId: 'again', now: T0 + 61 });
        expect(await store.getSession('i1')).toMatchObject({ token: null, externalCustomerId: null, resultsStatus: 'erased' });
        await store.setResultsStatus('i1', 'ready', null, T0 + 62);
        expect((await store.getSession('i1'))?.resultsStatus).toBe('erased');
        // Erasing it again is a quiet no-op: known (true), but no second audit row and no new updatedAt.
        const before = (await store.getSession('i1'))!.updatedAt;
        expect(await store.eraseSession('i1', 'user-request', T0 + 70)).toBe(true);
        expect((await store.getSession('i1'))!.updatedAt).toBe(before);
        expect((await store.listAudit('i1')).filter((a) => a.kind === 'erasure')).toHaveLength(1);

        expect(await store.eraseSession('nope', 'x', T0)).toBe(false);
        expect(await store.listAudit('nope')).toEqual([]);
      });

      it('purgeExpired erases sessions created before the cutoff, once', async () => {
        await session('old1', { now: T0 });
        await session('old2', { now: T0 + 1 });
        await session('new1', { now: T0 + 1000 });
        await session('old-erased', { now: T0 });
        await store.eraseSession('old-erased', 'user-request', T0 + 2);
        await store.saveResults('old1', { scores: {}, ocr: { fullName: OCR_NAME }, fetchedAt: T0 }, 'approve', T0 + 3);
        await store.createResumeToken('rt-old', 'old2', T0 + 1e9);
        await store.createResumeToken('rt-new', 'new1', T0 + 1e9);
        for (const id of ['old1', 'new1']) await store.recordStep(id, { step: 'results', outcome: 'ok', code: 'approve', at: T0 + 4 });

        // A sweep told to stop (a shutdown) erases nothing more.
        expect(await store.purgeExpired(T0 + 500, T0 + 1500, AbortSignal.abort())).toBe(0);
        expect(await store.getSession('old2')).toMatchObject({ resultsStatus: 'pending' });
        await store.enqueueJob({ kind: 'callback', subject: 'old1', payload: { onboardingStatus: 'ONBOARDING_FINISHED', decision: 'approve' }, runAt: T0 + 1e6, dedupeKey: 'callback:old1:ONBOARDING_FINISHED:approve' }, T0 + 3);
        expect(await store.purgeExpired(T0 + 500, T0 + 2000)).toBe(2);
        expect(await store.getResults('old1')).toBeNull();
        expect(await store.listSteps('old1')).toEqual([]);
        expect(await store.listSteps('new1')).toHaveLength(1);
        expect((await store.listJobs('old1')).map((j) => j.payload)).toEqual([{}]);
        for (const id of ['old1', 'old2']) expect(await store.getSession(id)).toMatchObject({ resultsStatus: 'erased', token: null, externalCustomerId: null });
        expect(await store.getSession('new1')).toMatchObject({ resultsStatus: 'pending', token: `${TOKEN}-new1` });
        expect(await store.checkResumeToken('old2', 'rt-old', T0)).toBe(false);
        expect(await store.checkResumeToken('new1', 'rt-new', T0)).toBe(true);
        const purges = (await store.listAudit()).filter((a) => a.kind === 'retention-purge');
        expect(purges.map((a) => a.subject).sort()).toEqual(['old1', 'old2']);
        expect(purges[0]).toMatchObject({ at: T0 + 2000, detail: { reason: 'retention', createdBefore: T0 + 500 } });
        expect(await store.purgeExpired(T0 + 500, T0 + 3000)).toBe(0);
      });

      it('purgeExpired with deleteAtIncode queues one deletion at Incode per session of its own it erases, and only then', async () => {
        await session('old1', { now: T0 });
        await session('old2', { now: T0 + 1 });
        // Created elsewhere and only followed here: erased here, but not this service's to delete at Incode.
        await store.upsertSession({ interviewId: 'old-ext', origin: 'external', now: T0 + 2 });
        await session('new1', { now: T0 + 1000 });
        await session('old-erased', { now: T0 });
        await store.eraseSession('old-erased', 'user-request', T0 + 2);
        // One already queued (an erasure asked for it, still waiting): not queued twice.
        await store.enqueueJob({ kind: 'incode-delete', subject: 'old2', payload: {}, runAt: T0 + 3, dedupeKey: 'incode-delete:old2' }, T0 + 3);
        const deletions = async () =>
          (await Promise.all(['old1', 'old2', 'old-ext', 'new1', 'old-erased'].map((id) => store.listJobs(id))))
            .flat()
            .filter((j) => j.kind === 'incode-delete')
            .map((j) => `${j.subject}:${j.state}`)
            .sort();
        expect(await store.purgeExpired(T0 + 500, T0 + 2000, undefined, true)).toBe(3);
        expect(await store.getSession('old-ext')).toMatchObject({ resultsStatus: 'erased' });
        expect(await deletions()).toEqual(['old1:queued', 'old2:queued']);
        // Without the flag a sweep queues none.
        await session('old3', { now: T0 + 10 });
        expect(await store.purgeExpired(T0 + 500, T0 + 3000)).toBe(1);
        expect((await store.listJobs('old3')).filter((j) => j.kind === 'incode-delete')).toEqual([]);
      });

      it('purgeExpired also drops expired idempotency keys', async () => {
        await store.claimIdempotencyKey('start', 'k-expired', 'h', T0 + 10, T0);
        await store.claimIdempotencyKey('start', 'k-live', 'h', T0 + 1e9, T0);
        await store.purgeExpired(T0, T0 + 100);
        expect((await h.exec('SELECT key FROM idempotency_keys')).map((r) => r.key)).toEqual(['k-live']);
      });

      it('claims only the jobs of one session when asked (a CLI sharing a broker\'s database)', async () => {
        for (const subject of ['mine', 'theirs', 'mine']) await store.enqueueJob({ kind: 'verify', subject, payload: {}, runAt: T0 }, T0);
        const claimed = await store.claimJobs('cli', 10, 1000, T0, 'mine');
        expect(claimed.map((j) => j.subject)).toEqual(['mine', 'mine']);
        expect(await store.listJobs('theirs')).toEqual([expect.objectContaining({ state: 'queued' })]);
        expect((await store.claimJobs('broker', 10, 1000, T0)).map((j) => j.subject)).toEqual(['theirs']);
      });

      it('purgeExpired drops finished jobs and processed events older than the cutoff, and nothing still to do', async () => {
        // Old: a processed event with its done job, and a dead job. Kept: an unprocessed event with its queued job,
        // and a job finished after the cutoff.
        const ev = (id: string) => ({ key: `${id}:ONBOARDING_FINISHED`, interviewId: id, onboardingStatus: 'ONBOARDING_FINISHED', payload: {}, receivedAt: T0 });
        await store.recordEvent(ev('done-old'), job('done-old'));
        await store.recordEvent(ev('dead-old'), job('dead-old'));
        await store.recordEvent(ev('pending'), job('pending', { runAt: T0 + 1e9 }));
        await store.recordEvent(ev('done-new'), job('done-new'));
        const claimed = await store.claimJobs('w', 10, 1000, T0);
        const of = (subject: string) => claimed.find((j) => j.subject === subject)!;
        await store.completeJob(of('done-old'), 'w', T0 + 10);
        await store.markEventProcessed('done-old:ONBOARDING_FINISHED', T0 + 10);
        await store.failJob(of('dead-old'), 'w', 'E', null, T0 + 10);
        await store.completeJob(of('done-new'), 'w', T0 + 900);
        await store.markEventProcessed('done-new:ONBOARDING_FINISHED', T0 + 900);
        await store.purgeExpired(T0 + 500, T0 + 1000);
        const jobs = (await h.exec('SELECT subject, state FROM jobs ORDER BY subject')).map((r) => `${r.subject}:${r.state}`);
        expect(jobs).toEqual(['done-new:done', 'pending:queued']);
        const events = (await h.exec('SELECT key FROM events ORDER BY key')).map((r) => r.key);
        // dead-old's event was never marked processed (its job carried no event key to release): kept like pending's.
        expect(events).toEqual(['dead-old:ONBOARDING_FINISHED', 'done-new:ONBOARDING_FINISHED', 'pending:ONBOARDING_FINISHED']);
      });

      it('unfollowedDeadResults finds the latest dead results job of a session left pending with nothing to fetch it', async () => {
        const ids = ['stuck', 'polled', 'live', 'failed', 'twice', 'fresh', 'verify', 'old'];
        for (const id of ids) await session(id);
        for (const id of ids) await store.enqueueJob(job(id, { kind: id === 'verify' ? 'verify' : 'results' }), T0);
        await store.enqueueJob(job('twice', { kind: 'results', payload: { n: 2 } }), T0);
        const claimed = await store.claimJobs('w', 20, 10_000, T0);
        expect(claimed).toHaveLength(ids.length + 1);
        const deadAt: Record<string, number> = { fresh: T0 + 900, old: T0 - 1 };
        for (const j of claimed) {
          const at = j.subject === 'twice' ? T0 + 10 * Number(j.payload.n) : (deadAt[j.subject] ?? T0 + 10);
          expect(await store.failJob(j, 'w', `E-${j.subject}-${String(j.payload.n)}`, null, at)).toBe(true);
        }
        // What a follow-up (or other work) leaves, and a session read as it should be is not taken.
        await store.schedulePoll('polled', T0 + 1e6, 0);
        await store.enqueueJob(job('live', { kind: 'results', runAt: T0 + 1e9 }), T0 + 20);
        await store.setResultsStatus('failed', 'failed', 'E-failed-1', T0 + 20);
        const found = await store.unfollowedDeadResults(T0, T0 + 500, 10);
        expect(found.map((j) => [j.subject, j.kind, j.state, j.lastError])).toEqual([
          ['stuck', 'results', 'dead', 'E-stuck-1'],
          ['twice', 'results', 'dead', 'E-twice-2'],
        ]);
        expect(await store.unfollowedDeadResults(T0, T0 + 500, 1)).toHaveLength(1);
        // An erased session has nothing left to follow up.
        await store.eraseSession('stuck', 'test', T0 + 30);
        expect((await store.unfollowedDeadResults(T0, T0 + 500, 10)).map((j) => j.subject)).toEqual(['twice']);
      });

      it('keeps one resume token per session: a new one revokes the previous, erasure revokes it', async () => {
        await session('i1');
        await store.createResumeToken('rt-1', 'i1', T0 + 1e6);
        expect(await store.checkResumeToken('i1', 'rt-1', T0 + 1)).toBe(true);
        await store.createResumeToken('rt-2', 'i1', T0 + 1e6);
        expect(await store.checkResumeToken('i1', 'rt-1', T0 + 3)).toBe(false);
        expect(await store.checkResumeToken('i1', 'rt-2', T0 + 3)).toBe(true);
        await store.eraseSession('i1', 'test', T0 + 4);
        expect(await store.checkResumeToken('i1', 'rt-2', T0 + 5)).toBe(false);
        await store.createResumeToken('rt-3', 'i1', T0 + 1e6);
        expect(await store.checkResumeToken('i1', 'rt-3', T0 + 7)).toBe(false);
      });
    });

    describe('inbox and jobs', () => {
      it('unlessDoneSince skips a job whose dedupe key was done at or after that time, and only then', async () => {
        const results = (over: Partial<NewJob> = {}) => job('u1', { kind: 'results', dedupeKey: 'results:u1:ONBOARDING_FINISHED', ...over });
        expect(await store.enqueueJob(results(), T0)).toBe(true);
        const [first] = await store.claimJobs('w', 1, 1000, T0);
        expect(await store.completeJob(first, 'w', T0 + 10)).toBe(true);
        // Done at T0 + 10: a check that read the session at T0 + 5 (before it finished) queues nothing.
        expect(await store.enqueueJob(results({ unlessDoneSince: T0 + 5 }), T0 + 20)).toBe(false);
        expect(await store.enqueueJob(results({ unlessDoneSince: T0 + 10 }), T0 + 20)).toBe(false);
        // Another key, or a read after it finished: queued.
        expect(await store.enqueueJob(results({ dedupeKey: 'results:u1:MANUAL_REVIEW_APPROVED', unlessDoneSince: T0 + 5 }), T0 + 20)).toBe(true);
        expect(await store.enqueueJob(results({ unlessDoneSince: T0 + 11 }), T0 + 20)).toBe(true);
        expect((await store.listJobs('u1')).map((j) => j.state).sort()).toEqual(['done', 'queued', 'queued']);
      });

      it('recordEvent stores the event and its job once', async () => {
        const e = { key: 'i1:ONBOARDING_FINISHED', interviewId: 'i1', onboardingStatus: 'ONBOARDING_FINISHED', payload: { a: 1 }, receivedAt: T0 };
        expect(await store.hasEvent(e.key)).toBe(false);
        expect(await store.recordEvent(e, job('i1'))).toBe(true);
        expect(await store.hasEvent(e.key)).toBe(true);
        expect(await store.hasEvent('i1:ID_VALIDATION_FINISHED')).toBe(false);
        expect(await store.recordEvent({ ...e, receivedAt: T0 + 5 }, job('i1'))).toBe(false);
        const dupes = await Promise.all([1, 2, 3].map(() => store.recordEvent(e, job('i1'))));
        expect(dupes).toEqual([false, false, false]);
        const jobs = await store.listJobs('i1');
        expect(jobs).toHaveLength(1);
        expect(jobs[0]).toMatchObject({ kind: 'fetch-results', subject: 'i1', payload: { n: 1 }, state: 'queued', attempts: 0, runAt: T0, createdAt: T0 });
        const [ev] = await h.exec('SELECT interview_id, onboarding_status, processed_at FROM events WHERE key = ?', [e.key]);
        expect(ev).toEqual({ interview_id: 'i1', onboarding_status: 'ONBOARDING_FINISHED', processed_at: null });
        await store.markEventProcessed(e.key, T0 + 9);
        const [ev2] = await h.exec('SELECT processed_at FROM events WHERE key = ?', [e.key]);
        expect(Number(ev2.processed_at)).toBe(T0 + 9);
      });

      it('a job that dies releases the unprocessed event it was checking in the same write; a retry or a processed event keeps it', async () => {
        const e = { key: 'i5:ONBOARDING_FINISHED', interviewId: 'i5', onboardingStatus: 'ONBOARDING_FINISHED', payload: {}, receivedAt: T0 };
        const check = job('i5', { kind: 'verify', payload: { source: 'webhook', eventKey: e.key } });
        expect(await store.recordEvent(e, check)).toBe(true);
        const [first] = await store.claimJobs('w', 1, 1000, T0);
        expect(await store.failJob(first, 'w', 'E', T0, T0)).toBe(true);
        expect(await store.recordEvent(e, check)).toBe(false);
        const [second] = await store.claimJobs('w', 1, 1000, T0);
        // Another owner's dead-letter changes nothing.
        expect(await store.failJob(second, 'other', 'E', null, T0)).toBe(false);
        expect(await store.recordEvent(e, check)).toBe(false);
        expect(await store.failJob(second, 'w', 'E', null, T0)).toBe(true);
        expect(await store.recordEvent({ ...e, receivedAt: T0 + 1 }, check)).toBe(true);
        // The redelivery's check runs and marks it processed: its later death leaves the event recorded.
        const [third] = await store.claimJobs('w', 1, 1000, T0 + 1);
        await store.markEventProcessed(e.key, T0 + 2);
        expect(await store.failJob(third, 'w', 'E', null, T0 + 2)).toBe(true);
        expect(await store.recordEvent(e, check)).toBe(false);
        // A dead job without an event key releases nothing.
        const other = { ...e, key: 'i5:X', onboardingStatus: 'X' };
        expect(await store.recordEvent(other, job('i5'))).toBe(true);
        const [plain] = await store.claimJobs('w', 1, 1000, T0 + 3);
        expect(await store.failJob(plain, 'w', 'E', null, T0 + 3)).toBe(true);
        expect(await store.recordEvent(other, job('i5'))).toBe(false);
      });

      it("a dead letter queues its later retry in the same write, and only when the dead letter is written; a whileLive one only over a live session", async () => {
        const queuedOf = async (subject: string) => (await store.listJobs(subject)).filter((j) => j.state === 'queued');
        const dieWith = async (subject: string, then: NewJob, owner = 'w', retryAt: number | null = null) => {
          await store.enqueueJob(job(subject, { kind: 'callback' }), T0);
          const [claimed] = await store.claimJobs('w', 1, 1000, T0, subject);
          return store.failJob(claimed, owner, 'E', retryAt, T0 + 1, then);
        };
        const retry = (subject: string, over: Partial<LaterRetry> = {}): LaterRetry => job(subject, { kind: 'callback', payload: { again: 1 }, runAt: T0 + 3_600_000, dedupeKey: `retry:${subject}`, ...over });
        await session('r1');
        expect(await dieWith('r1', retry('r1'))).toBe(true);
        expect(await queuedOf('r1')).toEqual([expect.objectContaining({ kind: 'callback', payload: { again: 1 }, runAt: T0 + 3_600_000, createdAt: T0 + 1 })]);
        // Its dedupe key holds while it waits: a second dead letter's retry is not queued beside it.
        expect(await dieWith('r1', retry('r1'))).toBe(true);
        expect(await queuedOf('r1')).toHaveLength(1);
        // Not held (another owner's), or not dead (a retry of the job itself): no later retry.
        await session('r2');
        expect(await dieWith('r2', retry('r2'), 'other')).toBe(false);
        const [stillRunning] = (await store.listJobs('r2')).filter((j) => j.state === 'running');
        expect(await store.failJob(stillRunning, 'w', 'E', T0 + 5, T0 + 1, retry('r2'))).toBe(true);
        expect((await store.listJobs('r2')).filter((j) => j.kind === 'callback' && j.runAt === T0 + 3_600_000)).toEqual([]);
        // whileLive: queued over a live session; not over an erased one, nor one with no row; without it, over either.
        await session('r3');
        await session('r4');
        await store.eraseSession('r4', 'test', T0);
        expect(await dieWith('r3', retry('r3', { whileLive: true }))).toBe(true);
        expect(await dieWith('r4', retry('r4', { whileLive: true }))).toBe(true);
        expect(await dieWith('r5', retry('r5', { whileLive: true }))).toBe(true);
        expect(await dieWith('r6', retry('r6', { kind: 'incode-delete' }))).toBe(true);
        expect((await queuedOf('r3')).map((j) => j.payload)).toEqual([{ again: 1 }]);
        expect(await queuedOf('r4')).toEqual([]);
        expect(await queuedOf('r5')).toEqual([]);
        expect(await queuedOf('r6')).toEqual([expect.objectContaining({ kind: 'incode-delete' })]);
      });

      it('recordEvent stores a payload holding NUL characters (PostgreSQL jsonb refuses them) with U+FFFD instead', async () => {
        const e = { key: 'i3:X', interviewId: 'i3', onboardingStatus: 'X', payload: { flowId: 'x\u0000y', nested: { list: ['\u0000', 'ok'] }, 'k\u0000': 1 }, receivedAt: T0 };
        expect(await store.recordEvent(e, job('i3'))).toBe(true);
        const [ev] = await h.exec('SELECT payload FROM events WHERE key = ?', [e.key]);
        const payload = typeof ev.payload === 'string' ? JSON.parse(ev.payload) : ev.payload;
        expect(payload).toEqual({ flowId: 'x\uFFFDy', nested: { list: ['\uFFFD', 'ok'] }, 'k\uFFFD': 1 });
        expect(await store.listJobs('i3')).toHaveLength(1);
        expect(await store.recordEvent(e, job('i3'))).toBe(false);
        // Lone surrogates too (jsonb refuses them); a well-formed pair is kept.
        const lone = { key: 'i4:X', interviewId: 'i4', onboardingStatus: 'X', payload: { flowId: 'x\ud800y', tail: 'z\udfff', pair: '\ud83d\ude00', 'k\udc00': 2 }, receivedAt: T0 };
        expect(await store.recordEvent(lone, job('i4'))).toBe(true);
        const [ev2] = await h.exec('SELECT payload FROM events WHERE key = ?', [lone.key]);
        expect(typeof ev2.payload === 'string' ? JSON.parse(ev2.payload) : ev2.payload).toEqual({ flowId: 'x\uFFFDy', tail: 'z\uFFFD', pair: '\ud83d\ude00', 'k\uFFFD': 2 });
      });

      it('concurrent duplicate recordEvent yields exactly one job', async () => {
        const e = { key: 'i2:X', interviewId: 'i2', onboardingStatus: 'X', payload: {}, receivedAt: T0 };
        const out = await Promise.all(Array.from({ length: 8 }, () => store.recordEvent(e, job('i2'))));
        expect(out.filter(Boolean)).toHaveLength(1);
        expect(await store.listJobs('i2')).toHaveLength(1);
      });

      it('enqueueJob honours dedupeKey while a job is active; activeJob names that job', async () => {
        expect(await store.activeJob('poll:s')).toBeNull();
        expect(await store.enqueueJob(job('s', { dedupeKey: 'poll:s' }), T0)).toBe(true);
        expect(await store.enqueueJob(job('s', { dedupeKey: 'poll:s' }), T0)).toBe(false);
        expect(await store.activeJob('poll:s')).toMatchObject({ subject: 's', state: 'queued', attempts: 0 });
        expect(await store.enqueueJob(job('s', { dedupeKey: 'other' }), T0)).toBe(true);
        expect(await store.enqueueJob(job('s'), T0)).toBe(true);
        expect(await store.enqueueJob(job('s'), T0)).toBe(true);
        expect(await store.claimJobs('w', 10, 1000, T0)).toHaveLength(4);
        // Running still blocks; done frees the key.
        expect(await store.enqueueJob(job('s', { dedupeKey: 'poll:s' }), T0)).toBe(false);
        expect(await store.activeJob('poll:s')).toMatchObject({ state: 'running', attempts: 1 });
        const jobs = await store.listJobs('s');
        for (const j of jobs) await store.completeJob(j, 'w', T0 + 1);
        expect(await store.activeJob('poll:s')).toBeNull();
        expect(await store.enqueueJob(job('s', { dedupeKey: 'poll:s' }), T0 + 2)).toBe(true);
        expect((await store.listJobs('s')).filter((j) => j.state === 'queued')).toHaveLength(1);
      });

      it('claims due jobs in runAt order, leases them and counts attempts', async () => {
        await store.enqueueJob(job('c', { runAt: T0 + 30 }), T0);
        await store.enqueueJob(job('a', { runAt: T0 + 10 }), T0);
        await store.enqueueJob(job('b', { runAt: T0 + 20 }), T0);
        await store.enqueueJob(job('future', { runAt: T0 + 10_000 }), T0);
        expect(await store.claimJobs('w1', 10, 1000, T0)).toEqual([]);
        const two = await store.claimJobs('w1', 2, 1000, T0 + 100);
        expect(two.map((j) => j.subject)).toEqual(['a', 'b']);
        expect(two[0]).toMatchObject({ state: 'running', attempts: 1, leaseOwner: 'w1', leaseExpiresAt: T0 + 1100 });
        const rest = await store.claimJobs('w2', 10, 1000, T0 + 100);
        expect(rest.map((j) => j.subject)).toEqual(['c']);
        expect(await store.countJobs()).toEqual({ queued: 1, running: 3, done: 0, dead: 0 });
      });

      it('re-claims a job whose lease expired (crash recovery); the old owner can no longer finish it', async () => {
        await store.enqueueJob(job('x'), T0);
        const [a] = await store.claimJobs('crashed', 5, 1000, T0);
        expect(await store.claimJobs('w2', 5, 1000, T0 + 999)).toEqual([]);
        const [b] = await store.claimJobs('w2', 5, 1000, T0 + 1000);
        expect(b).toMatchObject({ id: a.id, attempts: 2, leaseOwner: 'w2', leaseExpiresAt: T0 + 2000 });
        expect(await store.completeJob(a, 'crashed', T0 + 1001)).toBe(false);
        expect(await store.failJob(a, 'crashed', 'E', null, T0 + 1001)).toBe(false);
        expect(await store.failJob(a, 'crashed', 'E', T0 + 2000, T0 + 1001)).toBe(false);
        expect((await store.listJobs('x'))[0]).toMatchObject({ state: 'running', leaseOwner: 'w2' });
        expect(await store.completeJob(a, 'w2', T0 + 1002)).toBe(false);
        expect(await store.completeJob(b, 'w2', T0 + 1002)).toBe(true);
        expect((await store.listJobs('x'))[0]).toMatchObject({ state: 'done' });
        expect(await store.claimJobs('w3', 5, 1000, T0 + 99_999)).toEqual([]);
        expect(await store.countJobs()).toEqual({ queued: 0, running: 0, done: 1, dead: 0 });
      });

      it('an attempt that outlived its lease records nothing, even when the same worker claimed the job again', async () => {
        await store.enqueueJob(job('y'), T0);
        const [first] = await store.claimJobs('w', 1, 1000, T0);
        const [second] = await store.claimJobs('w', 1, 1000, T0 + 1000);
        expect(second).toMatchObject({ id: first.id, attempts: 2, leaseOwner: 'w', leaseExpiresAt: T0 + 2000 });
        expect(await store.completeJob(first, 'w', T0 + 1001)).toBe(false);
        expect(await store.failJob(first, 'w', 'E', null, T0 + 1001)).toBe(false);
        expect(await store.failJob(first, 'w', 'E', T0 + 5000, T0 + 1001)).toBe(false);
        expect(await store.releaseJob(first, 'w', T0 + 1001)).toBe(false);
        expect((await store.listJobs('y'))[0]).toMatchObject({ state: 'running', attempts: 2, leaseExpiresAt: T0 + 2000 });
        expect(await store.completeJob(second, 'w', T0 + 1002)).toBe(true);
        expect((await store.listJobs('y'))[0]).toMatchObject({ state: 'done' });
      });

      it('completeJob with forget deletes the finished row, only while its claim holds it, and frees its dedupe key', async () => {
        await store.enqueueJob(job('f', { dedupeKey: 'verify:f:poll' }), T0);
        const [first] = await store.claimJobs('w', 1, 1000, T0);
        const [second] = await store.claimJobs('w', 1, 1000, T0 + 1000);
        expect(await store.completeJob(first, 'w', T0 + 1001, true)).toBe(false);
        expect(await store.completeJob(second, 'other', T0 + 1001, true)).toBe(false);
        expect(await store.listJobs('f')).toHaveLength(1);
        expect(await store.completeJob(second, 'w', T0 + 1002, true)).toBe(true);
        expect(await store.listJobs('f')).toEqual([]);
        expect(await store.countJobs()).toEqual({ queued: 0, running: 0, done: 0, dead: 0 });
        // The next check of the same session is queued under the same key.
        expect(await store.enqueueJob(job('f', { dedupeKey: 'verify:f:poll' }), T0 + 2000)).toBe(true);
        expect(await store.listJobs('f')).toEqual([expect.objectContaining({ state: 'queued' })]);
      });

      it('releaseJob queues a running job again at once and gives its attempt back; only its holder can', async () => {
        await store.enqueueJob(job('r', { dedupeKey: 'dr' }), T0);
        const [j] = await store.claimJobs('w', 1, 60_000, T0);
        expect(j.attempts).toBe(1);
        expect(await store.releaseJob(j, 'someone-else', T0 + 5)).toBe(false);
        expect(await store.releaseJob(j, 'w', T0 + 5)).toBe(true);
        expect((await store.listJobs('r'))[0]).toMatchObject({ state: 'queued', runAt: T0 + 5, attempts: 0, lastError: 'SHUTDOWN', leaseOwner: null, leaseExpiresAt: null });
        // Still the active job of its dedupe key, and claimable at once by anyone.
        expect(await store.enqueueJob(job('r', { dedupeKey: 'dr' }), T0 + 6)).toBe(false);
        const [again] = await store.claimJobs('w2', 1, 60_000, T0 + 6);
        expect(again).toMatchObject({ id: j.id, attempts: 1 });
        expect(await store.releaseJob(j, 'w', T0 + 7)).toBe(false);
        // Handed back twice in a row: the second time the attempt counts (a job that stalls every process until it
        // shuts down must still reach its last attempt).
        expect(await store.releaseJob(j, 'w2', T0 + 8)).toBe(false);
        expect(await store.releaseJob(again, 'w2', T0 + 8)).toBe(true);
        expect((await store.listJobs('r'))[0]).toMatchObject({ state: 'queued', attempts: 1, lastError: 'SHUTDOWN' });
      });

      it('deferJob puts a running job off until a time, its attempt given back and its last error kept; only its holder can', async () => {
        await store.enqueueJob(job('df', { dedupeKey: 'ddf' }), T0);
        const [j] = await store.claimJobs('w', 1, 60_000, T0);
        expect(await store.failJob(j, 'w', 'INCODE_NOT_FOUND', T0 + 1, T0 + 1)).toBe(true);
        const [k] = await store.claimJobs('w', 1, 60_000, T0 + 1);
        expect(k.attempts).toBe(2);
        expect(await store.deferJob(k, 'someone-else', T0 + 3000, T0 + 2)).toBe(false);
        expect(await store.deferJob(k, 'w', T0 + 3000, T0 + 2)).toBe(true);
        expect((await store.listJobs('df'))[0]).toMatchObject({ state: 'queued', runAt: T0 + 3000, attempts: 1, lastError: 'INCODE_NOT_FOUND', leaseOwner: null, leaseExpiresAt: null });
        expect(await store.claimJobs('w', 1, 60_000, T0 + 2999)).toEqual([]);
        expect(await store.deferJob(k, 'w', T0 + 4000, T0 + 3)).toBe(false);
      });

      it('failJob retries later or dead-letters', async () => {
        await store.enqueueJob(job('x', { dedupeKey: 'dx' }), T0);
        const [j] = await store.claimJobs('w', 1, 1000, T0);
        expect(await store.failJob(j, 'w', 'E_TIMEOUT', T0 + 500, T0 + 1)).toBe(true);
        expect((await store.listJobs('x'))[0]).toMatchObject({ state: 'queued', runAt: T0 + 500, lastError: 'E_TIMEOUT', leaseOwner: null, leaseExpiresAt: null });
        expect(await store.claimJobs('w', 1, 1000, T0 + 499)).toEqual([]);
        const [again] = await store.claimJobs('w', 1, 1000, T0 + 500);
        expect(again.attempts).toBe(2);
        expect(await store.failJob(again, 'someone-else', 'E_OTHER', null, T0 + 501)).toBe(false);
        expect((await store.listJobs('x'))[0].state).toBe('running');
        expect(await store.failJob(again, 'w', 'E_GIVE_UP', null, T0 + 502)).toBe(true);
        expect((await store.listJobs('x'))[0]).toMatchObject({ state: 'dead', lastError: 'E_GIVE_UP', attempts: 2 });
        expect(await store.claimJobs('w', 1, 1000, T0 + 1e9)).toEqual([]);
        expect(await store.countJobs()).toEqual({ queued: 0, running: 0, done: 0, dead: 1 });
        // A dead job no longer holds its dedupe key.
        expect(await store.enqueueJob(job('x', { dedupeKey: 'dx' }), T0 + 600)).toBe(true);
      });

      it('countJobs reports all four states, zero when empty; listJobs filters by subject', async () => {
        expect(await store.countJobs()).toEqual({ queued: 0, running: 0, done: 0, dead: 0 });
        await store.enqueueJob(job('a'), T0);
        await store.enqueueJob(job('a', { kind: 'other', payload: undefined }), T0 + 1);
        await store.enqueueJob(job('b'), T0);
        const a = await store.listJobs('a');
        expect(a.map((j) => j.kind)).toEqual(['fetch-results', 'other']);
        expect(a[1].payload).toEqual({});
        expect(typeof a[0].id).toBe('string');
        expect(await store.listJobs('none')).toEqual([]);
        // The queue alone (the metrics' depth): a done job is not counted.
        const [claimed] = await store.claimJobs('w', 1, 1000, T0 + 5);
        expect(await store.completeJob(claimed, 'w', T0 + 6)).toBe(true);
        expect(await store.countJobs()).toEqual({ queued: 2, running: 0, done: 1, dead: 0 });
        expect(await store.countJobs({ done: false })).toEqual({ queued: 2, running: 0, done: 0, dead: 0 });
      });

      it('concurrent claims on one store never hand out a job twice', async () => {
        for (let i = 0; i < 30; i++) await store.enqueueJob(job(`j${i}`), T0);
        const batches = await Promise.all(Array.from({ length: 6 }, (_, i) => store.claimJobs(`w${i}`, 7, 1000, T0)));
        const ids = batches.flat().map((j) => j.id);
        expect(new Set(ids).size).toBe(ids.length);
        expect(ids).toHaveLength(30);
      });

      itShared('two store instances on the same database never claim the same job', async () => {
        const other = await open();
        for (let i = 0; i < 60; i++) await store.enqueueJob(job(`j${i}`), T0);
        const got: string[] = [];
        const worker = async (s: Store, owner: string) => {
          for (;;) {
            const jobs = await s.claimJobs(owner, 3, 60_000, T0);
            if (!jobs.length) return;
            got.push(...jobs.map((j) => j.id));
            for (const j of jobs) await s.completeJob(j, owner, T0 + 1);
          }
        };
        await Promise.all([worker(store, 'A'), worker(other, 'B'), worker(store, 'C'), worker(other, 'D')]);
        expect(got).toHaveLength(60);
        expect(new Set(got).size).toBe(60);
        expect(await store.countJobs()).toEqual({ queued: 0, running: 0, done: 60, dead: 0 });
      });
    });

    describe('audit', () => {
      it('appends and lists, optionally by subject, in insertion order', async () => {
        await store.audit('admin-view', 'i1', { by: 'ops' }, T0 + 2);
        await store.audit('admin-view', 'i2', {}, T0 + 1);
        await store.audit('config', 'i1', { nested: { a: [1, 2] } }, T0 + 3);
        const all = await store.listAudit();
        expect(all.map((a) => [a.kind, a.subject])).toEqual([
          ['admin-view', 'i1'],
          ['admin-view', 'i2'],
          ['config', 'i1'],
        ]);
        const i1 = await store.listAudit('i1');
        expect(i1).toHaveLength(2);
        expect(i1[1]).toMatchObject({ kind: 'config', detail: { nested: { a: [1, 2] } }, at: T0 + 3 });
        expect(typeof i1[0].id).toBe('string');
        expect(i1[0].id).not.toBe(i1[1].id);
      });
    });

    describe('idempotency keys', () => {
      it('a new session marks the Idempotency-Key that created it done, in the same write', async () => {
        // The pending claim's short lease (T0 + 10) becomes the key's full lifetime (T0 + 1000) on completion.
        expect(await store.claimIdempotencyKey('session:a', 'k1', 'h1', T0 + 10, T0)).toEqual({ state: 'new' });
        await store.upsertSession({ interviewId: 'i1', origin: 'broker', token: 't', idempotency: { scope: 'session:a', key: 'k1', expiresAt: T0 + 1000, claimedAt: T0, requestSha256: 'sha-h1' }, now: T0 });
        expect(await store.claimIdempotencyKey('session:a', 'k1', 'h1', T0 + 10, T0 + 100)).toEqual({ state: 'done', requestHash: 'sha-h1', interviewId: 'i1' });
        expect(await store.claimIdempotencyKey('session:a', 'k1', 'h1', T0 + 2000, T0 + 1000)).toEqual({ state: 'new' });
      });

      it("an erasure of its session clears what the key kept of the request; the key answers erased until it expires, then is free", async () => {
        const idem = (key: string, claimedAt: number) => ({ scope: 'session:a', key, expiresAt: T0 + 1000, claimedAt, requestSha256: `sha-${key}` });
        expect(await store.claimIdempotencyKey('session:a', 'k1', 'h1', T0 + 10, T0)).toEqual({ state: 'new' });
        await store.upsertSession({ interviewId: 'i1', origin: 'broker', token: 't1', externalCustomerId: 'zq-erased@example.com', idempotency: idem('k1', T0), now: T0 });
        expect(await store.claimIdempotencyKey('session:a', 'k2', 'h2', T0 + 10, T0)).toEqual({ state: 'new' });
        await store.upsertSession({ interviewId: 'i2', origin: 'broker', token: 't2', idempotency: idem('k2', T0), now: T0 });
        await store.recordIdempotencyAnswer(idem('k1', T0), 'i1', { statusCode: 422, body: { code: 'CAPTURE_REJECTED' } });
        // A session written a moment "before" its key's claim (the wall clock stepped back between the two): its key.
        expect(await store.claimIdempotencyKey('session:a', 'k5', 'h5', T0 + 1600, T0 + 1500)).toEqual({ state: 'new' });
        await store.upsertSession({ interviewId: 'i5', origin: 'broker', token: 't5', idempotency: idem('k5', T0 + 1500), now: T0 });
        expect(await store.eraseSession('i5', 'test', T0 + 5)).toBe(true);
        expect(await store.claimIdempotencyKey('session:a', 'k5', 'h5', T0 + 10, T0 + 6)).toEqual({ state: 'erased' });
        // A key a replica of the earlier release took over after it expired, and completed for another session without
        // writing the column: it still names i1, but was claimed after i1's key lapsed, which is at least 2 s after i1
        // was created.
        await h.exec("INSERT INTO idempotency_keys (scope, key, request_hash, response_enc, state, expires_at, created_at, interview_id) VALUES ('session:a', 'k9', 'h9', 'enc', 'done', ?, ?, 'i1')", [T0 + 9000, T0 + 2001]);
        expect(await store.eraseSession('i1', 'test', T0 + 5)).toBe(true);
        const rows = await h.exec("SELECT key, request_hash, response_enc, state FROM idempotency_keys WHERE scope = 'session:a' ORDER BY key");
        expect(rows[0]).toEqual({ key: 'k1', request_hash: 'erased', response_enc: null, state: 'erased' });
        expect(rows.find((r) => r.key === 'k9')).toEqual({ key: 'k9', request_hash: 'h9', response_enc: 'enc', state: 'done' });
        // Whatever body a replay sends; a later answer of the first request is not written back.
        expect(await store.claimIdempotencyKey('session:a', 'k1', 'other', T0 + 10, T0 + 6)).toEqual({ state: 'erased' });
        await store.recordIdempotencyAnswer(idem('k1', T0), 'i1', { statusCode: 202, body: {} });
        expect(await store.claimIdempotencyKey('session:a', 'k1', 'h1', T0 + 10, T0 + 7)).toEqual({ state: 'erased' });
        // Another session's key is left as it was; an erased key expires like any other, and is then new.
        expect(await store.claimIdempotencyKey('session:a', 'k2', 'h2', T0 + 10, T0 + 8)).toEqual({ state: 'done', requestHash: 'sha-k2', interviewId: 'i2' });
        expect(await store.claimIdempotencyKey('session:a', 'k1', 'h3', T0 + 2000, T0 + 1000)).toEqual({ state: 'new' });
        // The retention purge clears them too.
        await store.upsertSession({ interviewId: 'i3', origin: 'broker', token: 't3', idempotency: { ...idem('k1', T0 + 1000), expiresAt: T0 + 5000 }, now: T0 + 1001 });
        expect(await store.purgeExpired(T0 + 2000, T0 + 1002)).toBeGreaterThanOrEqual(1);
        expect(await store.claimIdempotencyKey('session:a', 'k1', 'h3', T0 + 2000, T0 + 1003)).toEqual({ state: 'erased' });
      });

      it('new, then pending, then done with the stored response; release frees it', async () => {
        expect(await store.claimIdempotencyKey('start', 'k1', 'h1', T0 + 1000, T0)).toEqual({ state: 'new' });
        expect(await store.claimIdempotencyKey('start', 'k1', 'h2', T0 + 1000, T0 + 1)).toEqual({ state: 'pending', requestHash: 'h1' });
        // Scopes are separate namespaces.
        expect(await store.claimIdempotencyKey('other', 'k1', 'h9', T0 + 1000, T0)).toEqual({ state: 'new' });
        const interviewId = 'interviewmarker7f3a9c';
        // Releasing the pending claim frees the key; a release naming another claim leaves it.
        await store.releaseIdempotencyKey('other', 'k1', T0 + 5);
        expect(await store.claimIdempotencyKey('other', 'k1', 'h9', T0 + 1000, T0 + 1)).toEqual({ state: 'pending', requestHash: 'h9' });
        await store.releaseIdempotencyKey('other', 'k1', T0);
        expect(await store.claimIdempotencyKey('other', 'k1', 'h8', T0 + 1000, T0 + 2)).toEqual({ state: 'new' });
        await session(interviewId, { idempotency: { scope: 'start', key: 'k1', expiresAt: T0 + 1000, claimedAt: T0, requestSha256: 'sha-h1' } });
        expect(await store.claimIdempotencyKey('start', 'k1', 'h1', T0 + 1000, T0 + 2)).toEqual({ state: 'done', requestHash: 'sha-h1', interviewId });
        // Stored responses are encrypted at rest like any other identifier.
        const [row] = await h.exec('SELECT response_enc FROM idempotency_keys WHERE scope = ? AND key = ?', ['start', 'k1']);
        expect(String(row.response_enc)).not.toContain(interviewId);
        // A done key is never released: it replays until it expires.
        await store.releaseIdempotencyKey('start', 'k1', T0);
        expect(await store.claimIdempotencyKey('start', 'k1', 'h1', T0 + 1000, T0 + 3)).toMatchObject({ state: 'done' });
      });

      it('a request that outlived its lease neither completes nor releases the claim of the retry that took the key over', async () => {
        expect(await store.claimIdempotencyKey('s', 'k', 'h', T0 + 10, T0)).toEqual({ state: 'new' });
        // The lease lapsed: a retry takes the key over (its own claim, claimedAt T0 + 20).
        expect(await store.claimIdempotencyKey('s', 'k', 'h', T0 + 30, T0 + 20)).toEqual({ state: 'new' });
        // The first request ends late: its release and its completion apply to its own (gone) claim only.
        await store.releaseIdempotencyKey('s', 'k', T0);
        await session('late', { idempotency: { scope: 's', key: 'k', expiresAt: T0 + 1000, claimedAt: T0, requestSha256: 'sha-h1' } });
        expect(await store.claimIdempotencyKey('s', 'k', 'h', T0 + 30, T0 + 21)).toEqual({ state: 'pending', requestHash: 'h' });
        // The retry completes its own claim: the key replays the retry's session.
        await session('retry', { idempotency: { scope: 's', key: 'k', expiresAt: T0 + 1000, claimedAt: T0 + 20, requestSha256: 'sha-h1' } });
        expect(await store.claimIdempotencyKey('s', 'k', 'h', T0 + 30, T0 + 22)).toEqual({ state: 'done', requestHash: 'sha-h1', interviewId: 'retry' });
      });

      it('treats an expired key as new', async () => {
        await store.claimIdempotencyKey('s', 'k', 'h1', T0 + 10, T0);
        await session('i1', { idempotency: { scope: 's', key: 'k', expiresAt: T0 + 10, claimedAt: T0, requestSha256: 'sha-h1' } });
        expect((await store.claimIdempotencyKey('s', 'k', 'h2', T0 + 100, T0 + 9)).state).toBe('done');
        expect(await store.claimIdempotencyKey('s', 'k', 'h2', T0 + 100, T0 + 10)).toEqual({ state: 'new' });
        expect(await store.claimIdempotencyKey('s', 'k', 'h3', T0 + 100, T0 + 11)).toEqual({ state: 'pending', requestHash: 'h2' });
      });

      it('exactly one concurrent claimer gets new', async () => {
        const out = await Promise.all(Array.from({ length: 8 }, (_, i) => store.claimIdempotencyKey('s', 'race', `h${i}`, T0 + 1000, T0)));
        expect(out.filter((o) => o.state === 'new')).toHaveLength(1);
        expect(out.filter((o) => o.state === 'pending')).toHaveLength(7);
      });

    });

    describe('resume tokens', () => {
      it('accepts a session\'s own token hash until it expires, and no other', async () => {
        await session('i1');
        await store.createResumeToken('h1', 'i1', T0 + 100);
        expect(await store.checkResumeToken('i1', 'h1', T0 + 99)).toBe(true);
        expect(await store.checkResumeToken('i1', 'h1', T0 + 100)).toBe(false);
        expect(await store.checkResumeToken('i1', 'unknown', T0)).toBe(false);
        expect(await store.checkResumeToken('i2', 'h1', T0)).toBe(false);
      });

      it('spends a token once (one winner among concurrent spends); a restore puts it back unless a newer one was issued since, even one spent in turn', async () => {
        // Each spend holds past the steps below, which restore what they spent.
        const HOLD = T0 + 50;
        await session('i1');
        await store.createResumeToken('h1', 'i1', T0 + 100);
        expect(await store.consumeResumeToken('i1', 'wrong', T0, HOLD)).toBeNull();
        expect(await store.consumeResumeToken('i1', 'h1', T0 + 100, HOLD)).toBeNull(); // expired
        const spends = await Promise.all([1, 2, 3].map(() => store.consumeResumeToken('i1', 'h1', T0 + 1, HOLD)));
        expect(spends.filter((x) => x !== null)).toEqual([{ expiresAt: T0 + 100, heldUntil: HOLD, createdAt: T0, onboardingStatus: 'UNKNOWN', configurationId: null, revivable: false }]);
        expect(await store.checkResumeToken('i1', 'h1', T0 + 2)).toBe(false);
        await store.restoreResumeToken('i1', 'h1', T0 + 100, HOLD);
        expect(await store.checkResumeToken('i1', 'h1', T0 + 2)).toBe(true);
        // Spent again, then replaced by a newer token: the restore no longer applies.
        expect((await store.consumeResumeToken('i1', 'h1', T0 + 3, HOLD))?.expiresAt).toBe(T0 + 100);
        await store.createResumeToken('h2', 'i1', T0 + 200);
        await store.restoreResumeToken('i1', 'h1', T0 + 100, HOLD);
        expect(await store.checkResumeToken('i1', 'h1', T0 + 4)).toBe(false);
        expect(await store.checkResumeToken('i1', 'h2', T0 + 4)).toBe(true);
        // The newer token is spent too, while the older one's call is still failing: the older restore must not
        // take the slot, so the newer one's own restore still gives its holder a token.
        expect((await store.consumeResumeToken('i1', 'h2', T0 + 5, HOLD))?.expiresAt).toBe(T0 + 200);
        await store.restoreResumeToken('i1', 'h1', T0 + 100, HOLD);
        expect(await store.checkResumeToken('i1', 'h1', T0 + 6)).toBe(false);
        await store.restoreResumeToken('i1', 'h2', T0 + 200, HOLD);
        expect(await store.checkResumeToken('i1', 'h2', T0 + 6)).toBe(true);
        // Restored, it can be spent once more, and then no more; the marker itself spends nothing.
        expect((await store.consumeResumeToken('i1', 'h2', T0 + 7, HOLD))?.expiresAt).toBe(T0 + 200);
        expect(await store.consumeResumeToken('i1', 'h2', T0 + 7, HOLD)).toBeNull();
        expect(await store.consumeResumeToken('i1', 'spent:h2', T0 + 7, HOLD)).toBeNull();
      });

      it('a spend never restored (its process died) holds the token only until its hold is over; then it may be spent once more', async () => {
        await session('i1');
        await store.createResumeToken('h1', 'i1', T0 + 10_000);
        expect(await store.consumeResumeToken('i1', 'h1', T0, T0 + 100)).toMatchObject({ heldUntil: T0 + 100 });
        // Held: neither spendable nor checkable, however often asked.
        expect(await store.consumeResumeToken('i1', 'h1', T0 + 99, T0 + 199)).toBeNull();
        expect(await store.checkResumeToken('i1', 'h1', T0 + 99)).toBe(false);
        // The hold is over: one of several concurrent spends wins, and holds it anew.
        const spends = await Promise.all([1, 2, 3].map(() => store.consumeResumeToken('i1', 'h1', T0 + 100, T0 + 300)));
        expect(spends.filter((x) => x !== null)).toEqual([expect.objectContaining({ heldUntil: T0 + 300 })]);
        // The first spend's late restore no longer applies (the token was spent again since); the second's does.
        await store.restoreResumeToken('i1', 'h1', T0 + 10_000, T0 + 100);
        expect(await store.consumeResumeToken('i1', 'h1', T0 + 200, T0 + 400)).toBeNull();
        await store.restoreResumeToken('i1', 'h1', T0 + 10_000, T0 + 300);
        expect(await store.checkResumeToken('i1', 'h1', T0 + 200)).toBe(true);
        // Another token's lapsed spend is no way in, nor is a marker passed as a hash.
        expect(await store.consumeResumeToken('i1', 'h2', T0 + 5000, T0 + 6000)).toBeNull();
        expect(await store.consumeResumeToken('i1', `spent:h1:${T0 + 300}`, T0 + 5000, T0 + 6000)).toBeNull();
      });

      it("a spend answers the session's status as it was spent (the route refuses finished onboardings without a second read)", async () => {
        await session('i1', { onboardingStatus: 'ONBOARDING_FINISHED', statusRank: statusRank('ONBOARDING_FINISHED') });
        await store.createResumeToken('h1', 'i1', T0 + 100);
        expect(await store.consumeResumeToken('i1', 'h1', T0 + 1, T0 + 50)).toEqual({ expiresAt: T0 + 100, heldUntil: T0 + 50, createdAt: T0, onboardingStatus: 'ONBOARDING_FINISHED', configurationId: null, revivable: false });
      });

      it("a spend says whether the session's results failed for a reason a resume undoes (polling gave up, or Incode said it was gone)", async () => {
        await session('i1');
        await store.setResultsStatus('i1', 'failed', 'POLLING_GAVE_UP', T0 + 1);
        await store.createResumeToken('h1', 'i1', T0 + 100);
        expect(await store.consumeResumeToken('i1', 'h1', T0 + 2, T0 + 50)).toMatchObject({ revivable: true });
        // Or Incode had said it no longer knew the session (a resume Incode takes proves it does).
        await session('i2');
        await store.setResultsStatus('i2', 'failed', 'INCODE_SESSION_GONE', T0 + 1);
        await store.createResumeToken('h2', 'i2', T0 + 100);
        expect(await store.consumeResumeToken('i2', 'h2', T0 + 2, T0 + 50)).toMatchObject({ revivable: true });
        // Not a session failed for another reason (a capture Incode refused).
        await session('i3');
        await store.setResultsStatus('i3', 'failed', 'INCODE_NOT_FOUND', T0 + 1);
        await store.createResumeToken('h3', 'i3', T0 + 100);
        expect(await store.consumeResumeToken('i3', 'h3', T0 + 2, T0 + 50)).toMatchObject({ revivable: false });
      });

      it('a token spent before its session is erased is never restored after', async () => {
        await session('i1');
        await store.createResumeToken('h1', 'i1', T0 + 100);
        expect((await store.consumeResumeToken('i1', 'h1', T0 + 1, T0 + 50))?.expiresAt).toBe(T0 + 100);
        await store.eraseSession('i1', 'test', T0 + 2);
        await store.restoreResumeToken('i1', 'h1', T0 + 100, T0 + 50);
        expect(await store.checkResumeToken('i1', 'h1', T0 + 3)).toBe(false);
        expect(await store.consumeResumeToken('i1', 'h1', T0 + 3, T0 + 50)).toBeNull();
      });
    });

    describe('two replicas on one database', () => {
      itShared('of one Idempotency-Key claimed and one resume token spent from two store instances at once, one wins each', async () => {
        const other = await open();
        await session('i1');
        await store.createResumeToken('h1', 'i1', T0 + 100);
        const [claims, spends] = await Promise.all([
          Promise.all([store, other, store, other].map((s, i) => s.claimIdempotencyKey('s', 'k', `h${i}`, T0 + 1000, T0))),
          Promise.all([store, other, store, other].map((s) => s.consumeResumeToken('i1', 'h1', T0 + 1, T0 + 50))),
        ]);
        expect(claims.filter((c) => c.state === 'new')).toHaveLength(1);
        expect(spends.filter((x) => x !== null)).toEqual([{ expiresAt: T0 + 100, heldUntil: T0 + 50, createdAt: T0, onboardingStatus: 'UNKNOWN', configurationId: null, revivable: false }]);
      });
    });

    describe('encryption at rest', () => {
      it('the raw database holds no plaintext PII', async () => {
        await session('i1', { token: TOKEN, externalCustomerId: EXT_ID });
        await store.saveResults('i1', { scores: { liveness: 0.99 }, ocr: { fullName: OCR_NAME, documentNumber: 'DOC-99887766' }, fetchedAt: T0 }, 'approve', T0);
        const raw = await h.dump();
        expect(raw).toContain('i1');
        for (const pii of [OCR_NAME, 'Zephyrine', 'DOC-99887766', EXT_ID, TOKEN]) expect(raw).not.toContain(pii);
      });

      it('a ciphertext moved to another row does not decrypt', async () => {
        await session('a');
        await session('b');
        await store.saveResults('a', { scores: { s: 1 }, ocr: { fullName: OCR_NAME }, fetchedAt: T0 }, 'approve', T0);
        await store.saveResults('b', { scores: { s: 2 }, ocr: { fullName: 'Someone Else' }, fetchedAt: T0 }, 'approve', T0);
        const [a] = await h.exec('SELECT ocr_enc FROM results WHERE interview_id = ?', ['a']);
        await h.exec('UPDATE results SET ocr_enc = ? WHERE interview_id = ?', [a.ocr_enc, 'b']);
        const err = await store.getResults('b').then(
          () => null,
          (e: Error) => e,
        );
        expect(err?.message).toMatch(/decryption failed/);
        expect(err?.message).not.toContain(OCR_NAME);
        // Token moved to another session's row fails too.
        const [ta] = await h.exec('SELECT token_enc FROM sessions WHERE interview_id = ?', ['a']);
        await h.exec('UPDATE sessions SET token_enc = ? WHERE interview_id = ?', [ta.token_enc, 'b']);
        await expect(store.getSession('b')).rejects.toThrow(/decryption failed/);
      });

      it('a tampered ciphertext does not decrypt', async () => {
        await session('a');
        await store.saveResults('a', { scores: { s: 1 }, ocr: { fullName: OCR_NAME }, fetchedAt: T0 }, 'approve', T0);
        const [r] = await h.exec('SELECT scores_enc FROM results WHERE interview_id = ?', ['a']);
        const parts = String(r.scores_enc).split('.');
        const ct = Buffer.from(parts[4], 'base64url');
        ct[0] ^= 1;
        parts[4] = ct.toString('base64url');
        await h.exec('UPDATE results SET scores_enc = ? WHERE interview_id = ?', [parts.join('.'), 'a']);
        await expect(store.getResults('a')).rejects.toThrow(/decryption failed/);
      });

      itShared('key rotation: a store with [k2, k1] reads k1 data and writes under k2', async () => {
        await session('a', { token: TOKEN });
        await store.saveResults('a', { scores: { s: 1 }, ocr: { fullName: OCR_NAME }, fetchedAt: T0 }, 'approve', T0);
        const rotated = await open(new Cipher([K2, K1]));
        expect((await rotated.getResults('a'))?.ocr).toEqual({ fullName: OCR_NAME });
        expect((await rotated.getSession('a'))?.token).toBe(TOKEN);
        await rotated.upsertSession({ interviewId: 'b', origin: 'broker', token: 'tb', now: T0 });
        await rotated.saveResults('b', { scores: {}, ocr: { fullName: 'B' }, fetchedAt: T0 }, 'review', T0);
        const [row] = await h.exec('SELECT key_id, ocr_enc FROM results WHERE interview_id = ?', ['b']);
        expect(row.key_id).toBe('k2');
        expect(String(row.ocr_enc)).toMatch(/^v1\.k2\./);
        // The old-key-only store cannot read data under the new key.
        await expect(store.getResults('b')).rejects.toThrow(/unknown key id k2/);
        const onlyK2 = await open(new Cipher([K2]));
        await expect(onlyK2.getResults('a')).rejects.toThrow(/unknown key id k1/);
        // The poller decrypts nothing: a row no configured key reads is listed like any other, not an error for all.
        await store.schedulePoll('a', T0, 0);
        await onlyK2.schedulePoll('b', T0 + 1, 0);
        await expect(onlyK2.getSession('a')).rejects.toThrow(/unknown key id k1/);
        const due = await onlyK2.sessionsDueForPoll(T0 + 10, 10);
        expect(due.map((d) => [d.interviewId, d.onboardingStatus])).toEqual([['a', 'UNKNOWN'], ['b', 'UNKNOWN']]);
        expect(due[0]).not.toHaveProperty('token');
      });

      describe('re-encryption under the first key (key rotation)', () => {
        // Under k1: five sessions with a token and a customer id (one of them erased: nothing left in it), results for two,
        // one completed Idempotency-Key (its response) and one pending (no response yet).
        const underK1 = async () => {
          for (const id of ['a', 'b', 'c', 'd', 'e']) await session(id, { token: `${TOKEN}-${id}`, externalCustomerId: `${EXT_ID}-${id}` });
          await store.saveResults('a', { scores: { s: 1 }, ocr: { fullName: OCR_NAME }, fetchedAt: T0 }, 'approve', T0);
          await store.saveResults('c', { scores: { s: 3 }, ocr: { fullName: 'C' }, fetchedAt: T0 }, 'review', T0);
          await store.eraseSession('e', 'test', T0);
          await store.claimIdempotencyKey('session:x', 'key-1', 'h1', T0 + 1e6, T0);
          await store.upsertSession({ interviewId: 'f', origin: 'broker', token: 'tok-f', idempotency: { scope: 'session:x', key: 'key-1', expiresAt: T0 + 1e6, claimedAt: T0, requestSha256: 'sha-h1' }, now: T0 });
          await store.claimIdempotencyKey('session:x', 'key-2', 'h2', T0 + 1e6, T0);
        };
        // a-d: token and customer id (8), f: token (1), results of a and c: scores and OCR (4), key-1's response (1).
        const K1_VALUES = 14;
        const underKey = async (kid: string) => {
          const counts = await Promise.all(
            ENCRYPTED_TABLES.flatMap((t) =>
              t.columns.map(async (c) => Number((await h.exec(`SELECT count(*) AS n FROM ${t.table} WHERE substr(${c.name}, 1, ${kid.length + 4}) = ?`, [`v1.${kid}.`]))[0].n)),
            ),
          );
          return counts.reduce((a, b) => a + b, 0);
        };

        itShared('walks every table in batches, moves each value under k2, and a store with k2 alone then reads them all', async () => {
          await underK1();
          const rotated = await open(new Cipher([K2, K1]));
          // Already under k2: not counted, not rewritten.
          await rotated.upsertSession({ interviewId: 'g', origin: 'broker', token: 'tok-g', externalCustomerId: 'ext-g', now: T0 });
          const [g] = await h.exec('SELECT token_enc FROM sessions WHERE interview_id = ?', ['g']);
          const totals = { found: 0, reencrypted: 0, unreadable: 0, waiting: 0 };
          const tables: number[] = [];
          for (let c: RekeyCursor | null = REKEY_START; c; ) {
            tables.push(c.table);
            const b = await rotated.reencryptBatch(c, 2);
            for (const k of ['found', 'reencrypted', 'unreadable', 'waiting'] as const) totals[k] += b[k];
            c = b.next;
          }
          expect(totals).toEqual({ found: K1_VALUES, reencrypted: K1_VALUES, unreadable: 0, waiting: 0 });
          // Seven sessions two at a time, then two results rows, then two idempotency keys; each table's last batch is short.
          expect(tables).toEqual([0, 0, 0, 0, 1, 1, 2, 2]);
          expect(await underKey('k1')).toBe(0);
          expect(await underKey('k2')).toBe(K1_VALUES + 2);
          expect((await h.exec('SELECT token_enc FROM sessions WHERE interview_id = ?', ['g']))[0].token_enc).toBe(g.token_enc);
          expect((await h.exec('SELECT key_id FROM results ORDER BY interview_id')).map((r) => r.key_id)).toEqual(['k2', 'k2']);

          const onlyK2 = await open(new Cipher([K2]));
          for (const id of ['a', 'b', 'c', 'd']) expect(await onlyK2.getSession(id)).toMatchObject({ token: `${TOKEN}-${id}`, externalCustomerId: `${EXT_ID}-${id}` });
          expect(await onlyK2.getSession('e')).toMatchObject({ token: null, externalCustomerId: null, resultsStatus: 'erased' });
          expect((await onlyK2.getResults('a'))?.ocr).toEqual({ fullName: OCR_NAME });
          expect(await onlyK2.getResults('c')).toMatchObject({ scores: { s: 3 }, ocr: { fullName: 'C' } });
          expect(await onlyK2.claimIdempotencyKey('session:x', 'key-1', 'h1', T0 + 1e6, T0 + 1)).toEqual({ state: 'done', requestHash: 'sha-h1', interviewId: 'f' });
          expect(await onlyK2.claimIdempotencyKey('session:x', 'key-2', 'h2', T0 + 1e6, T0 + 1)).toEqual({ state: 'pending', requestHash: 'h2' });
        });

        itShared('KeyRotation passes until one finds nothing left; a value under a key no longer configured is reported, not lost', async () => {
          await underK1();
          const rotation = new KeyRotation(await open(new Cipher([K2, K1])));
          expect(await rotation.run(sweepLimit())).toEqual([
            { found: K1_VALUES, reencrypted: K1_VALUES, unreadable: 0, waiting: 0 },
            { found: 0, reencrypted: 0, unreadable: 0, waiting: 0 },
          ]);
          expect(rotation.done).toBe(true);
          // Done: a later sweep checks with one pass, which finds nothing again...
          expect(await rotation.run(sweepLimit())).toEqual([{ found: 0, reencrypted: 0, unreadable: 0, waiting: 0 }]);
          // ...or what a replica still on the old key order (k1 first) wrote since, which it moves.
          await store.upsertSession({ interviewId: 'late', origin: 'broker', token: 'tok-late', now: T0 });
          expect(await rotation.run(sweepLimit())).toEqual([
            { found: 1, reencrypted: 1, unreadable: 0, waiting: 0 },
            { found: 0, reencrypted: 0, unreadable: 0, waiting: 0 },
          ]);
          await store.eraseSession('late', 'test', T0);

          // k1 removed too early (k3 added first, k2 still listed): the values under k2 move to k3; the one under k1 cannot be
          // read and stays as it is, and the pass after reports it again, then stops.
          await store.upsertSession({ interviewId: 'h', origin: 'broker', token: 'tok-h', now: T0 });
          const [before] = await h.exec('SELECT token_enc FROM sessions WHERE interview_id = ?', ['h']);
          const early = new KeyRotation(await open(new Cipher([{ id: 'k3', key: Buffer.alloc(32, 3) }, K2])));
          const passes = await early.run(sweepLimit());
          expect(passes).toEqual([
            { found: K1_VALUES + 1, reencrypted: K1_VALUES, unreadable: 1, waiting: 0, missingKeyIds: ['k1'] },
            { found: 1, reencrypted: 0, unreadable: 1, waiting: 0, missingKeyIds: ['k1'] },
          ]);
          expect(early.done).toBe(true);
          // Stopped there: no later sweep scans again for what no configured key can read.
          expect(await early.run(sweepLimit())).toEqual([]);
          expect((await h.exec('SELECT token_enc FROM sessions WHERE interview_id = ?', ['h']))[0].token_enc).toBe(before.token_enc);
          expect(await store.getSession('h')).toMatchObject({ token: 'tok-h' });
        });

        itShared('stops between batches when the sweep is stopped, and the next sweep goes on from there', async () => {
          await underK1();
          // A batch and 30 more sessions, so that the walk takes more than one batch of sessions.
          for (let i = 0; i < REKEY_BATCH + 30; i++) await session(`m${String(i).padStart(3, '0')}`, { token: `tok-m${i}`, externalCustomerId: null });
          const all = K1_VALUES + REKEY_BATCH + 30;
          const rotated = await open(new Cipher([K2, K1]));
          // The cursors the walk asks for, in order.
          const cursors: RekeyCursor[] = [];
          const rotation = new KeyRotation({ reencryptBatch: (c, limit) => (cursors.push(c), rotated.reencryptBatch(c, limit)) });
          const stop = new AbortController();
          let firstNext: RekeyCursor | null = null;
          expect(await rotation.run(sweepLimit(stop.signal), (b) => ((firstNext = b.next), stop.abort()))).toEqual([]);
          expect(cursors).toEqual([REKEY_START]);
          expect(firstNext).toMatchObject({ table: 0, after: [expect.any(String)] });
          expect(all - (await underKey('k1'))).toBeGreaterThan(0);
          // The next sweep starts where the first stopped, not over again, and the pass counts each value once.
          expect((await rotation.run(sweepLimit()))[0]).toEqual({ found: all, reencrypted: all, unreadable: 0, waiting: 0 });
          expect(cursors[1]).toEqual(firstNext);
          expect(await underKey('k1')).toBe(0);
        });

        itShared('leaves a completed Idempotency-Key from before the request SHA-256 under its key until it expires, and only then calls the rotation done', async () => {
          await underK1();
          // Completed as the previous version did: its replay compares request_hash, an HMAC under the old key.
          await store.claimIdempotencyKey('session:x', 'key-old', 'h-old', T0 + 1000, T0);
          await h.exec(`UPDATE idempotency_keys SET state = 'done', response_enc = ? WHERE key = 'key-old'`, [
            new Cipher([K1]).encryptJson({ interviewId: 'a' }, aad.idempotencyResponse('session:x', 'key-old')),
          ]);
          const rotated = await open(new Cipher([K2, K1]));
          const rotation = new KeyRotation(rotated);
          // The first pass moves the rest and finds it waiting; the pass after finds only it, and the sweep stops there.
          expect(await rotation.run(sweepLimit())).toEqual([
            { found: K1_VALUES + 1, reencrypted: K1_VALUES, unreadable: 0, waiting: 1 },
            { found: 1, reencrypted: 0, unreadable: 0, waiting: 1 },
          ]);
          expect(rotation.done).toBe(false);
          expect(await rotated.claimIdempotencyKey('session:x', 'key-old', 'h-old', T0 + 1000, T0 + 1)).toEqual({ state: 'done', requestHash: 'h-old', interviewId: 'a' });
          // Expired and swept: the next sweep's pass finds nothing left.
          await rotated.purgeExpired(0, T0 + 1000);
          expect(await rotation.run(sweepLimit())).toEqual([{ found: 0, reencrypted: 0, unreadable: 0, waiting: 0 }]);
          expect(rotation.done).toBe(true);
        });
      });
    });
  });
}
