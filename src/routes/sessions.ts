// Results API for the customer's backend (service keys): read, list, refresh and erase sessions.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { Config } from '../config';
import { AppError } from '../errors';
import { serviceKeyGuard } from '../plugins/service-auth';
import { Decision, emptyBodyAsNone, ResultsStatus, WITH_BODY, WITH_PATH_PARAM, withErrors } from '../schemas';
import { InvalidCursorError, type IncodeDeletionAt, type JobState, type SessionListing, type SessionRecord } from '../store/types';

const InterviewParams = Type.Object({ interviewId: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' }) });

const Step = Type.Object({
  step: Type.String(),
  outcome: Type.Union(['ok', 'rejected', 'failed', 'skipped'].map((o) => Type.Literal(o))),
  code: Type.Union([Type.String(), Type.Null()]),
  message: Type.Union([Type.String(), Type.Null()]),
  at: Type.String({ format: 'date-time' }),
});

const SessionSummary = Type.Object({
  interviewId: Type.String(),
  externalCustomerId: Type.Union([Type.String(), Type.Null()], {
    description: 'Your user id as sent to POST /session or POST /onboardings: check it is the user who handed you this interviewId (null for a session started elsewhere)',
  }),
  origin: Type.String(),
  configurationId: Type.Union([Type.String(), Type.Null()], {
    description: 'The Incode flow the session was started with (null when this service did not start it or used the account\'s default flow): check it is one whose checks your decision needs',
  }),
  onboardingStatus: Type.String(),
  resultsStatus: ResultsStatus,
  decision: Decision,
  lastError: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
});

const SessionDetail = Type.Intersect([
  SessionSummary,
  Type.Object({
    scores: Type.Union([Type.Object({}, { additionalProperties: true }), Type.Null()], { description: "Incode's get/score payload as fetched" }),
    ocr: Type.Union([Type.Object({}, { additionalProperties: true }), Type.Null()], { description: "Incode's get/ocr-data payload as fetched" }),
    fetchedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    steps: Type.Array(Step),
    incodeDeletion: Type.Union([Type.Literal('scheduled'), Type.Literal('queued'), Type.Literal('running'), Type.Literal('done'), Type.Literal('dead'), Type.Null()], {
      description:
        'The latest deletion at Incode: asked for with DELETE ?incode=true, or scheduled (for the end of the retention period with RETENTION_DELETE_AT_INCODE when the session was erased here before it, or an hour after one an Incode outage dead-lettered); dead means it gave up (the audit and result_jobs_dead_letters_total say why); null when none was asked for',
    }),
  }),
]);

const ListQuery = Type.Object(
  {
    onboardingStatus: Type.Optional(Type.String({ maxLength: 64, pattern: '^[A-Z0-9_]+$' })),
    resultsStatus: Type.Optional(ResultsStatus),
    decision: Type.Optional(Type.Union([Type.Literal('approve'), Type.Literal('decline'), Type.Literal('review')])),
    since: Type.Optional(Type.String({ format: 'date-time', description: 'updatedAt >= since' })),
    until: Type.Optional(Type.String({ format: 'date-time', description: 'updatedAt < until' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
    cursor: Type.Optional(Type.String({ maxLength: 512 })),
  },
  { additionalProperties: false },
);

const iso = (ms: number) => new Date(ms).toISOString();

// The schema's date-time format admits what Date.parse cannot read (a leap second, 23:59:60): refused like any other
// malformed time rather than handed to the database as NaN.
function epochMs(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ms = Date.parse(value);
  if (!Number.isSafeInteger(ms)) throw new AppError(400, 'VALIDATION_FAILED', `querystring/${name} is not a date-time this API can read`);
  // Times are kept in whole milliseconds, and Date.parse drops the digits below one: a bound between two milliseconds
  // is the next one, so `updatedAt >= since` and `updatedAt < until` hold as written (…06.4355Z is after …06.435Z).
  const fraction = /\.(\d+)/.exec(value)?.[1] ?? '';
  return /[1-9]/.test(fraction.slice(3)) ? ms + 1 : ms;
}

export function summary(s: SessionListing) {
  return {
    interviewId: s.interviewId,
    externalCustomerId: s.externalCustomerId,
    origin: s.origin,
    configurationId: s.configurationId,
    onboardingStatus: s.onboardingStatus,
    resultsStatus: s.resultsStatus,
    decision: s.decision,
    lastError: s.lastError,
    createdAt: iso(s.createdAt),
    updatedAt: iso(s.updatedAt),
  };
}

const sessionsRoutes: FastifyPluginAsyncTypebox<{ config: Config }> = async (app, opts) => {
  app.addHook('onRequest', serviceKeyGuard(opts.config.adminApiKeys));

  /**
   * The latest deletion at Incode of an erased session: its job's state (listJobs is oldest first), or, once the
   * retention sweep has dropped the finished job, what the last audit entry about one says: done, or dead (given up).
   * A deletion that failed must never read as one that was not asked for.
   */
  async function incodeDeletionOf(interviewId: string): Promise<JobState | 'scheduled' | null> {
    const job = (await app.store.listJobs(interviewId)).filter((j) => j.kind === 'incode-delete').at(-1);
    if (job) return job.state === 'queued' && job.runAt > Date.now() && job.attempts === 0 ? 'scheduled' : job.state;
    const last = (await app.store.listAudit(interviewId))
      .filter((a) => a.kind === 'incode-deleted' || (a.kind === 'dead-letter' && a.detail.kind === 'incode-delete'))
      .at(-1);
    return last ? (last.kind === 'incode-deleted' ? 'done' : 'dead') : null;
  }

  app.get(
    '/sessions/:interviewId',
    { schema: { summary: 'A session with its decision, scores and OCR data', tags: ['results'], security: [{ serviceKey: [] }], params: InterviewParams, response: withErrors({ 200: SessionDetail }, [...WITH_PATH_PARAM, 401, 404]) } },
    async (req) => {
      const s = await app.store.getSession(req.params.interviewId);
      if (!s) throw new AppError(404, 'SESSION_NOT_FOUND', 'No session with this interviewId');
      // An erased session has no results row: the store's erasure removes it and refuses later saves.
      const [results, steps, deletion] = await Promise.all([
        app.store.getResults(s.interviewId),
        app.store.listSteps(s.interviewId),
        s.resultsStatus === 'erased' ? incodeDeletionOf(s.interviewId) : null,
      ]);
      return {
        ...summary(s),
        scores: (results?.scores as Record<string, unknown>) ?? null,
        ocr: (results?.ocr as Record<string, unknown>) ?? null,
        fetchedAt: results ? iso(results.fetchedAt) : null,
        steps: steps.map((st) => ({ ...st, at: iso(st.at) })),
        incodeDeletion: deletion,
      };
    },
  );

  app.get(
    '/sessions',
    { schema: { summary: 'Sessions, newest first, filtered by status and time, with cursor pagination', tags: ['results'], security: [{ serviceKey: [] }], querystring: ListQuery, response: withErrors({ 200: Type.Object({ items: Type.Array(SessionSummary), nextCursor: Type.Union([Type.String(), Type.Null()]) }) }, [401]) } },
    async (req) => {
      const q = req.query;
      // Ajv coerces "1e309" or "Infinity" to Infinity and then skips minimum and maximum, which only check finite numbers.
      if (q.limit !== undefined && !(Number.isSafeInteger(q.limit) && q.limit >= 1 && q.limit <= 200))
        throw new AppError(400, 'VALIDATION_FAILED', 'querystring/limit must be an integer from 1 to 200');
      const page = await app.store.listSessions({
        onboardingStatus: q.onboardingStatus,
        resultsStatus: q.resultsStatus as SessionRecord['resultsStatus'] | undefined,
        decision: q.decision,
        since: epochMs('since', q.since),
        until: epochMs('until', q.until),
        limit: q.limit ?? 50,
        cursor: q.cursor,
      }).catch((err: unknown) => {
        if (err instanceof InvalidCursorError) throw new AppError(400, 'INVALID_CURSOR', 'cursor is not one this API returned');
        throw err;
      });
      return { items: page.items.map(summary), nextCursor: page.nextCursor };
    },
  );

  app.post(
    '/sessions/:interviewId/refresh',
    { onRequest: emptyBodyAsNone, schema: { summary: 'Read the status from Incode now and fetch results if finished', tags: ['results'], security: [{ serviceKey: [] }], params: InterviewParams, response: withErrors({ 202: Type.Object({ interviewId: Type.String(), queued: Type.Boolean() }) }, [...WITH_BODY, ...WITH_PATH_PARAM, 401, 404, 409]) } },
    async (req, reply) => {
      const s = await app.store.getSession(req.params.interviewId);
      if (!s) throw new AppError(404, 'SESSION_NOT_FOUND', 'No session with this interviewId');
      if (s.resultsStatus === 'erased') throw new AppError(409, 'SESSION_ERASED', 'This session was erased');
      // queued false: a refresh still queued (it has not read Incode yet) took this one in.
      const queued = await app.results.refresh(s.interviewId);
      reply.status(202);
      return { interviewId: s.interviewId, queued };
    },
  );

  app.delete(
    '/sessions/:interviewId',
    {
      onRequest: emptyBodyAsNone,
      schema: {
        summary: 'Erase the stored personal data of a session (an audit entry without PII is kept); with incode=true, delete it at Incode too',
        tags: ['results'],
        security: [{ serviceKey: [] }],
        params: InterviewParams,
        querystring: Type.Object(
          {
            incode: Type.Optional(
              Type.Boolean({
                description:
                  "Also delete the session at Incode (DELETE /omni/interview with keepCustomer=false: its images and OCR, and the customer's identity record where Incode honours keepCustomer), in the background and retried; needs INCODE_EXECUTIVE_EMAIL and INCODE_EXECUTIVE_PASSWORD. Off by default: KYC records often must be kept.",
              }),
            ),
          },
          { additionalProperties: false },
        ),
        response: withErrors(
          {
            200: Type.Object({
              interviewId: Type.String(),
              erased: Type.Boolean(),
              incodeDeletion: Type.Union([Type.Literal('queued'), Type.Literal('scheduled'), Type.Null()]),
              incodeDeletionAt: Type.Optional(Type.String({ format: 'date-time', description: 'When a scheduled deletion at Incode is due' })),
            }),
          },
          [...WITH_BODY, ...WITH_PATH_PARAM, 401, 404],
        ),
      },
    },
    async (req) => {
      const { interviewId } = req.params;
      if (req.query.incode && !app.results.canDeleteAtIncode)
        throw new AppError(400, 'EXECUTIVE_CREDENTIALS_MISSING', 'Deleting at Incode needs INCODE_EXECUTIVE_EMAIL and INCODE_EXECUTIVE_PASSWORD');
      // Asked for: now. Else, with RETENTION_DELETE_AT_INCODE, at the end of the retention period (now if that is past):
      // the sweep, which deletes at Incode what it erases, will never select an erased session. Only for a session this
      // service started (one created elsewhere is its owner's to delete). Queued with the erasure, in its transaction.
      const now = Date.now();
      const retentionMs = opts.config.retentionDays * 86_400_000;
      const decided: { at: number | null } = { at: null };
      const when: IncodeDeletionAt | undefined = req.query.incode
        ? () => (decided.at = now)
        : opts.config.retentionDeleteAtIncode
          ? (s) => (decided.at = s.origin === 'broker' ? s.createdAt + retentionMs : null)
          : undefined;
      const ok = await app.store.eraseSession(interviewId, 'api-request', now, when);
      if (!ok) throw new AppError(404, 'SESSION_NOT_FOUND', 'No session with this interviewId');
      const { at } = decided;
      const incodeDeletion = at === null ? null : at <= now ? 'queued' : 'scheduled';
      if (incodeDeletion === 'queued') app.worker.kick();
      const due = at !== null && incodeDeletion === 'scheduled' ? { incodeDeletionAt: new Date(at).toISOString() } : {};
      req.log.info({ interviewId, incodeDeletion, ...due }, 'session erased');
      return { interviewId, erased: true, incodeDeletion, ...due };
    },
  );
};

export default sessionsRoutes;
