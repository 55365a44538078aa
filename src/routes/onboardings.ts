// POST /onboardings: the server-to-server flow; 422 for a capture to repeat, else 202 and the rest in the background.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { Config } from '../config';
import { AppError, databaseUnavailableError, overloadedError } from '../errors';
import { assertCountryCode } from '../iso3166';
import { OnboardingError, Orchestrator, askedStop, handOffQueuesCheck, type CaptureStep } from '../onboarding/orchestrator';
import { decodeImage } from '../onboarding/images';
import { serviceKeyGuard } from '../plugins/service-auth';
import { idempotencyInProgress, type SessionGuards } from '../protection/session-guards';
import { capturesWentThrough, capturesWindowMs, faceMatchMayHaveRun } from '../results/pipeline';
import { sha256Hex } from '../security';
import type { IdempotencyAnswer, StepRecord } from '../store/types';
import { STOP_WIND_DOWN_MS, settledWithin } from '../util/settle';
import { CUSTOMER_ID_PATTERN, IdempotencyKeyHeaders, orError, WITH_BODY, withErrors } from '../schemas';
import { loggedError } from '../logging';

// The alphabet is checked in code (decodeImage), not by a schema pattern: a regular expression over several MB
// can overflow its backtracking stack. Standard alphabet, optional padding, optional data: URL prefix.
// No contentEncoding: the document would call it format byte, and a gateway validating against that would refuse the
// data: URL prefix this route accepts.
const image = (description: string) => Type.String({ minLength: 16, description });

const OnboardingBody = Type.Object(
  {
    front: image('Front of the ID: base64 JPEG or PNG (a data: URL prefix is accepted)'),
    back: Type.Optional(image('Back of the ID; may be left out for one-sided documents (passports)')),
    selfie: image('Selfie: base64 JPEG or PNG, at least 1000 px on its short side for best results'),
    countryCode: Type.Optional(Type.String({ minLength: 3, maxLength: 3, description: 'ALL (default) or an ISO 3166-1 alpha-3 code; BRA for Brazilian IDs' })),
    configurationId: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$', description: 'Incode flow id; INCODE_CONFIGURATION_ID by default' })),
    language: Type.Optional(Type.String({ pattern: '^[a-z]{2}(-[A-Z]{2})?$', description: 'e.g. en-US, es-ES, pt-BR' })),
    externalCustomerId: Type.Optional(Type.String({ minLength: 1, maxLength: 128, pattern: CUSTOMER_ID_PATTERN, description: 'Your user id (no control characters, bidirectional overrides or invisible marks that would make it display as another id)' })),
    oneSided: Type.Optional(
      Type.Boolean({ description: 'The document has one side only (a visa, a one-sided card): the front goes up with onlyFront=true and no back is asked for. Passports are recognised without it.' }),
    ),
  },
  { additionalProperties: false },
);

const Accepted = Type.Object({
  interviewId: Type.String(),
  status: Type.Literal('processing', { description: 'Captures accepted; follow GET /sessions/:interviewId' }),
});

const CaptureRejected = Type.Object({
  code: Type.Literal('CAPTURE_REJECTED'),
  message: Type.String({ description: 'The message to show the user whose capture must be repeated' }),
  step: Type.Union([Type.Literal('front'), Type.Literal('back'), Type.Literal('selfie')]),
  reason: Type.String({ description: 'Stable reason code, e.g. ID_GLARE, SELFIE_FACE_NOT_FOUND' }),
  interviewId: Type.String(),
  incodeCode: Type.Optional(Type.Integer()),
  requestId: Type.Optional(Type.String()),
});

const StepFailure = Type.Object({
  code: Type.String(),
  message: Type.String(),
  step: Type.Optional(Type.String()),
  interviewId: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  requestId: Type.Optional(Type.String()),
});

const CAPTURE_STEPS: ReadonlySet<string> = new Set<CaptureStep>(['front', 'back', 'selfie']);

/** What the route answers itself (202, 422), and so what a replay of its Idempotency-Key gets back. */
type OnboardingAnswer = Static<typeof Accepted> | Static<typeof CaptureRejected>;

/** Sends a kept (or first) answer; a 422 carries this request's id, so a replay is traced as itself. */
function answered(reply: FastifyReply, answer: IdempotencyAnswer, requestId: string): OnboardingAnswer {
  reply.status(answer.statusCode as 202 | 422);
  return (answer.statusCode === 422 ? { ...(answer.body as object), requestId } : answer.body) as OnboardingAnswer;
}

export interface OnboardingsRouteOptions {
  config: Config;
  /** For the Idempotency-Key (the caller authentication and rate limits of app routes do not apply here). */
  guards: SessionGuards;
}

const onboardingsRoutes: FastifyPluginAsyncTypebox<OnboardingsRouteOptions> = async (app, opts) => {
  const { config, guards } = opts;
  // How long a session whose Idempotency-Key has no answer yet counts as still running its captures (capturesWindowMs).
  // (The key's own pending claim covers the start alone: the session's write completes it.)
  const capturesMs = capturesWindowMs(config);
  const requireServiceKey = serviceKeyGuard(config.adminApiKeys);
  // Background finishes still running: aborted and awaited at shutdown so nothing touches a closed store.
  const inflight = new Map<Promise<void>, AbortController>();
  // Requests still in their capture steps: each may yet start a background finish, so shutdown waits for them first,
  // and stops those still running after the grace (their Incode calls and store writes must not outlive the store).
  const capturing = new Map<Promise<unknown>, AbortController>();

  // Stateless between onboardings: one for the plugin's life.
  const o = new Orchestrator({ incode: app.incode, store: app.store, pipeline: app.results, config, log: app.log });

  // The grace counts from the moment close() begins, as the cut of connections does: captures still running at its end
  // are stopped then by a timer set at that moment, not by this plugin's hook, which runs only after the root's (the
  // worker's stop among them, which may take the grace and its wind-down), so that their 503 SHUTTING_DOWN is sent
  // within the wind-down before connections are cut.
  const stopAll = () => {
    for (const ac of [...capturing.values(), ...inflight.values()]) ac.abort();
  };
  let stopTimer: NodeJS.Timeout | undefined;
  app.onClosing(() => {
    stopTimer = setTimeout(stopAll, config.shutdownGraceMs);
    stopTimer.unref();
  });
  app.addHook('preClose', async () => {
    // Bounded: past the grace their connections are cut anyway, and the other shutdown steps must still run.
    const left = Math.max(0, (app.closingSince() ?? Date.now()) + config.shutdownGraceMs - Date.now());
    await settledWithin(capturing.keys(), left);
    clearTimeout(stopTimer);
    stopAll();
    await settledWithin([...capturing.keys(), ...inflight.keys()], STOP_WIND_DOWN_MS);
  });

  // What finishes an onboarding that no background finish watches, as the log lines name it.
  const leftTo = { both: 'webhooks and polling', polling: 'polling', webhook: handOffQueuesCheck(config) ? 'webhooks and a queued status check' : 'webhooks' }[config.results.mode];

  /**
   * Watches an accepted onboarding until its results are stored. Out of the handler on purpose: a closure made in the
   * handler would share its scope, so the request and its decoded images (tens of MB) would stay in memory for as
   * long as the finish runs (up to 10 min), after the upload budget has already given their bytes back.
   */
  async function finishInBackground(interviewId: string, requestId: string, log: FastifyBaseLogger): Promise<void> {
    // Once the app's close() has begun (its first preClose hook, before the worker's or this plugin's): a request that
    // finishes its captures after that (its body was still arriving) leaves the rest to polling instead of starting a
    // background finish that nothing would stop, and that would need the worker.
    if (app.closingSince() !== null) {
      log.warn({ interviewId }, `onboarding left to ${leftTo} at shutdown`);
      return o.handOff(interviewId, log);
    }
    // Bounded: each finish watches its session until its results are stored. Past the bound the session is one
    // like any SDK session: its webhooks and polling (without polling, the check queued here) finish it, and mark it
    // complete under MARK_COMPLETE.
    if (inflight.size >= config.limits.onboardingMaxBackground) {
      log.warn({ interviewId, running: inflight.size }, `onboarding left to ${leftTo}: ONBOARDING_MAX_BACKGROUND finishes already running`);
      return o.handOff(interviewId, log);
    }
    const ac = new AbortController();
    const p: Promise<void> = o
      .finish(interviewId, { signal: ac.signal, requestId })
      .then(
        (r) => log.info({ interviewId, resultsStatus: r.resultsStatus }, 'onboarding finished'),
        // The orchestrator already recorded the step and its code on the session; no PII in this line.
        async (err: unknown) => {
          const e = err as OnboardingError;
          if (e?.code === 'ABORTED') log.warn({ interviewId }, `onboarding left to ${leftTo} at shutdown`);
          // An erasure: the orchestrator has said so ('onboarding stopped').
          else if (!askedStop(e?.code)) log.error({ interviewId, step: e?.step, code: e?.code ?? 'INTERNAL_ERROR' }, 'onboarding did not finish');
          // Stopped, timed out or refused for a while (the session kept pending), as opposed to given up: checked later.
          // Part of p, so shutdown waits for it while the store is still open.
          await o.handOff(interviewId, log);
        },
      )
      .finally(() => inflight.delete(p));
    inflight.set(p, ac);
  }

  // A 30 MB upload costs several times its size in heap while it is parsed and decoded, so what the uploads in
  // flight announced (Content-Length; the body limit when unannounced) is bounded and the rest turned away before
  // their bodies are read. One upload is always admitted, whatever its size: the body limit bounds it.
  const budget = config.limits.onboardingInflightBytes;
  let heldBytes = 0;
  // A share is held until the connection has closed AND the handler no longer holds the decoded images: a client
  // that goes away mid-flow does not free memory the captures still use.
  interface Hold {
    bytes: number;
    closed: boolean;
    working: boolean;
    released: boolean;
  }
  const holds = new WeakMap<FastifyRequest, Hold>();
  const releaseIfDone = (h: Hold) => {
    if (h.released || !h.closed || h.working) return;
    h.released = true;
    heldBytes -= h.bytes;
  };
  async function admitUpload(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (budget === 0) return;
    const announced = Number(req.headers['content-length']);
    const bytes = Number.isSafeInteger(announced) && announced >= 0 ? Math.min(announced, config.limits.onboardingBodyBytes) : config.limits.onboardingBodyBytes;
    if (heldBytes > 0 && heldBytes + bytes > budget) {
      app.metrics.shed.inc({ reason: 'upload_budget' });
      throw overloadedError('Too many uploads in progress; retry shortly', 2);
    }
    heldBytes += bytes;
    const hold: Hold = { bytes, closed: false, working: false, released: false };
    holds.set(req, hold);
    // 'close' comes once whether the answer was sent or the client went away; a request refused before its handler
    // (400, 413, 415) is released there.
    reply.raw.once('close', () => {
      hold.closed = true;
      releaseIfDone(hold);
    });
  }

  app.post(
    '/onboardings',
    {
      bodyLimit: config.limits.onboardingBodyBytes,
      // The key first, so that only authenticated callers hold any of the budget.
      onRequest: [requireServiceKey, admitUpload],
      // An upload its client gave up on before it was whole gets no answer, so no latency sample either: counted here.
      onRequestAbort: (req, done) => {
        app.metrics.requestsAborted.inc({ route: '/onboardings' });
        done();
      },
      schema: {
        summary: 'Run the whole Incode onboarding server to server from ID and selfie images',
        description:
          'Captures are checked as they are uploaded (the integration guide\'s rules). A capture to repeat answers 422 with the step, a stable reason and the message to show; ' +
          'otherwise 202 as soon as the captures are accepted, and processing, scores and OCR continue in the background (GET /sessions/:interviewId).',
        tags: ['onboarding'],
        security: [{ serviceKey: [] }],
        headers: IdempotencyKeyHeaders('A retry with the same key and images gets the first answer (202 or 422) instead of a second, billed onboarding'),
        body: OnboardingBody,
        response: withErrors({ 202: Accepted, 422: orError(CaptureRejected), 500: StepFailure, 502: StepFailure, 503: StepFailure, 504: StepFailure }, [...WITH_BODY, 401, 404, 409]),
      },
    },
    async (req, reply) => {
      const body = req.body;
      assertCountryCode(body.countryCode);
      const countryCode = body.countryCode ?? 'ALL';
      const hold = holds.get(req);
      if (hold) hold.working = true;
      try {
        // Checked before any Idempotency-Key is claimed: a bad image is a 400 whatever the key.
        const front = decodeImage(body.front, 'front');
        const back = body.back !== undefined && !body.oneSided ? decodeImage(body.back, 'back') : undefined;
        const selfie = decodeImage(body.selfie, 'selfie');
        const input = { countryCode, configurationId: body.configurationId, externalCustomerId: body.externalCustomerId, language: body.language, oneSided: body.oneSided };
        // A database known to be down could keep neither the session nor its steps: refused before Incode bills one,
        // and before an Idempotency-Key is claimed (held, it would turn the retry the answer asks for into a 409).
        if (app.databaseOutage.down) throw databaseUnavailableError();
        return await guards.idempotent(
          req,
          // The images by their digests: a retry must send the same ones, and hashing 30 MB once beats serialising it.
          () => ({ ...input, front: sha256Hex(front), back: back === undefined ? null : sha256Hex(back), selfie: sha256Hex(selfie) }),
          async (claimed) => {
            const stop = new AbortController();
            const captures = o.runCaptures({ ...input, front, back, selfie, requestId: req.id, signal: stop.signal, idempotency: claimed });
            capturing.set(captures, stop);
            let outcome;
            try {
              outcome = await captures;
            } catch (err) {
              // The error handler answers it (with the step and the session it reached); a session Incode started still counts.
              if (err instanceof OnboardingError && err.interviewId) app.metrics.sessionsCreated.inc({ route: 'onboardings' });
              throw err;
            } finally {
              capturing.delete(captures);
            }
            app.metrics.sessionsCreated.inc({ route: 'onboardings' });
            let answer: IdempotencyAnswer;
            if (!outcome.ok) {
              const { message, step, reason, interviewId, incodeCode } = outcome;
              answer = { statusCode: 422, body: { code: 'CAPTURE_REJECTED' as const, message, step, reason, interviewId, incodeCode } };
            } else {
              await finishInBackground(outcome.interviewId, req.id, req.log);
              answer = { statusCode: 202, body: { interviewId: outcome.interviewId, status: 'processing' as const } };
            }
            // The key was completed by the session's own write; its replays now get this answer. A failure to keep it
            // does not turn the answer decided here into an error: a replay then goes by the session's steps.
            if (claimed)
              await app.store.recordIdempotencyAnswer(claimed, outcome.interviewId, answer).catch((err: unknown) => req.log.error({ interviewId: outcome.interviewId, err: loggedError(err) }, 'Idempotency-Key answer not kept'));
            return answered(reply, answer, req.id);
          },
          async (interviewId, answer) => {
            // An erased session's kept answer is not replayed either: a key erasure did not mark (completed before schema
            // version 11, or by a replica of an earlier release) is caught here.
            const s = await app.store.getSession(interviewId);
            if (!s || s.resultsStatus === 'erased') throw new AppError(404, 'SESSION_NOT_FOUND', 'The session of this Idempotency-Key no longer exists');
            if (answer) return answered(reply, answer, req.id);
            // Started, with no answer kept: its captures still running (here or on another replica), done but their
            // answer not kept, failed at a step (that answer named this interviewId), or its process died.
            const steps = await app.store.listSteps(interviewId);
            // Rebuilt from the steps: the captures went through (the first answer was 202), or one was rejected (422;
            // its Incode code, which the steps do not keep, aside).
            if (capturesWentThrough(steps)) return answered(reply, { statusCode: 202, body: { interviewId, status: 'processing' } }, req.id);
            const rejected = steps.find((st): st is StepRecord & { step: CaptureStep } => st.outcome === 'rejected' && CAPTURE_STEPS.has(st.step));
            if (rejected)
              return answered(reply, { statusCode: 422, body: { code: 'CAPTURE_REJECTED', message: rejected.message ?? '', step: rejected.step, reason: rejected.code ?? '', interviewId } }, req.id);
            if (!steps.some((st) => st.outcome === 'failed') && Date.now() - s.createdAt < capturesMs)
              throw idempotencyInProgress();
            // Failed at a step, yet finished since (its face match had reached Incode): nothing to send again.
            if (s.resultsStatus === 'ready')
              throw new AppError(409, 'ONBOARDING_NOT_COMPLETED', `The request with this Idempotency-Key started onboarding ${interviewId}, whose answer was a failure, but the session has since finished: its results are at GET /sessions/${interviewId}`, {}, { interviewId });
            // Its face match failed in a way that does not say Incode did nothing: the session may still finish, and
            // captures sent again would start and bill a second one.
            if (faceMatchMayHaveRun(steps, s))
              throw new AppError(409, 'ONBOARDING_NOT_COMPLETED', `The request with this Idempotency-Key started onboarding ${interviewId}, whose face match failed but may have reached Incode: the session may still finish (GET /sessions/${interviewId}); send the captures again with a new Idempotency-Key only once it shows failed`, {}, { interviewId });
            throw new AppError(409, 'ONBOARDING_NOT_COMPLETED', `The request with this Idempotency-Key started onboarding ${interviewId} but did not complete its captures (GET /sessions/${interviewId} shows where it stopped); send them again with a new Idempotency-Key`, {}, { interviewId });
          },
          { route: 'onboarding', runsForMs: capturesMs },
        );
      } finally {
        if (hold) {
          hold.working = false;
          releaseIfDone(hold);
        }
      }
    },
  );
};

export default onboardingsRoutes;
