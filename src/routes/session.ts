// POST /session (token broker), POST /session/resume (new token, same onboarding), GET /session/status (app view).
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import type { Config } from '../config';
import { AppError, databaseUnavailableError } from '../errors';
import { isInterviewId } from '../incode/token-claims';
import { assertCountryCode } from '../iso3166';
import type { StartRequest } from '../incode/types';
import { sessionForToken } from '../plugins/service-auth';
import { callerSecurity, CUSTOMER_ID_PATTERN, Decision, ResultsStatus, emptyBodyAsNone, IdempotencyKeyHeaders, RATE_LIMITED, SESSION_TOKEN_SECURITY, SessionTokenHeaders, WITH_BODY, withErrors } from '../schemas';
import { randomToken, sha256Hex } from '../security';
import { claimDeadlines, type SessionGuards } from '../protection/session-guards';
import { isTerminal } from '../results/status';
import { loggedError } from '../logging';

const SessionBody = Type.Object(
  {
    countryCode: Type.Optional(Type.String({ minLength: 3, maxLength: 3, description: 'ALL (default) or an ISO 3166-1 alpha-3 code; BRA for Brazilian IDs' })),
    configurationId: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$', description: 'Incode flow id; INCODE_CONFIGURATION_ID by default' })),
    language: Type.Optional(Type.String({ pattern: '^[a-z]{2}(-[A-Z]{2})?$', description: 'e.g. en-US, es-ES, pt-BR' })),
    externalCustomerId: Type.Optional(Type.String({ minLength: 1, maxLength: 128, pattern: CUSTOMER_ID_PATTERN, description: 'Your user id (no control characters, bidirectional overrides or invisible marks that would make it display as another id)' })),
    redirectionUrl: Type.Optional(Type.String({ maxLength: 2048, pattern: '^https?://[^\\s]+$', description: 'Where the hosted flow returns the user' })),
  },
  { additionalProperties: false },
);

const SessionResponse = Type.Object({
  token: Type.String({ description: 'Incode session token, for X-Incode-Hardware-Id / the Web SDK' }),
  interviewId: Type.String(),
  apiUrl: Type.String({ description: 'API URL to initialise the SDK with; ends in /0/ (token-only endpoints)' }),
  resumeToken: Type.String({ description: 'Opaque; POST /session/resume exchanges it for a fresh token of the same onboarding' }),
  resumeTokenExpiresAt: Type.String({ format: 'date-time' }),
});

const ResumeBody = Type.Object({ resumeToken: Type.String({ minLength: 20, maxLength: 512 }) }, { additionalProperties: false });

// A resume token is `<base64url(interviewId)>.<256 random bits>`: it names its session, so the check is one
// primary-key read (no index over token hashes to keep up on every insert); only the secret's hash is stored.
function mintResumeToken(interviewId: string): { resumeToken: string; tokenHash: string } {
  const secret = randomToken(32);
  return { resumeToken: `${Buffer.from(interviewId, 'utf8').toString('base64url')}.${secret}`, tokenHash: sha256Hex(secret) };
}

function parseResumeToken(resumeToken: string): { interviewId: string; tokenHash: string } | null {
  const dot = resumeToken.indexOf('.');
  if (dot <= 0) return null;
  const named = resumeToken.slice(0, dot);
  const interviewId = Buffer.from(named, 'base64url').toString('utf8');
  const secret = resumeToken.slice(dot + 1);
  // Only the spelling mintResumeToken gives: Node's base64url decoding skips padding and stray characters, so many
  // strings would name one session.
  if (!isInterviewId(interviewId) || Buffer.from(interviewId, 'utf8').toString('base64url') !== named || secret.length < 32) return null;
  return { interviewId, tokenHash: sha256Hex(secret) };
}

/**
 * Whether the request's client has gone: its connection closed (Node ends the request when the client does, unless it
 * half-closes), as a client that timed out closes it. Read, never listened to: no cost unless a call waits.
 */
const callerGone = (req: FastifyRequest) => () => req.socket.destroyed;

const sessionFinished = () => new AppError(409, 'SESSION_FINISHED', 'This onboarding has ended: its results are read by your backend, not with a new token');

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return '';
  }
}

const StatusResponse = Type.Object({
  interviewId: Type.String(),
  onboardingStatus: Type.String(),
  resultsStatus: ResultsStatus,
  decision: Decision,
});

export interface SessionRouteOptions {
  config: Config;
  /** The SDK's API URL (sandbox: this service's /sandbox/incode/0/). */
  sdkApiUrl: string;
  guards: SessionGuards;
}

const sessionRoutes: FastifyPluginAsyncTypebox<SessionRouteOptions> = async (app, opts) => {
  const { config, guards } = opts;

  /** POST /session's options, refused before any rate limit counts the request (and before Incode is called). */
  function checkStartOptions(req: FastifyRequest): void {
    const body = req.body as Static<typeof SessionBody>;
    // Before the per-customer rate limit, which counts the id the session will go under.
    body.externalCustomerId = guards.customerIdOf(req, body.externalCustomerId);
    assertCountryCode(body.countryCode);
    // The flow decides which checks run (liveness, government validation...): an app must not pick a lighter one.
    const allowed = config.incode.allowedConfigurationIds;
    if (body.configurationId !== undefined && !allowed.includes('*') && !allowed.includes(body.configurationId))
      throw new AppError(400, 'CONFIGURATION_NOT_ALLOWED', 'configurationId is not one of the flows this service allows (INCODE_ALLOWED_CONFIGURATION_IDS)');
    // Where the hosted flow sends the user at its end: a link must not end on someone else's site.
    const origins = config.incode.redirectionUrlOrigins;
    if (body.redirectionUrl !== undefined && !origins.includes('*') && !origins.includes(originOf(body.redirectionUrl)))
      throw new AppError(400, 'REDIRECTION_URL_NOT_ALLOWED', origins.length === 0 ? 'redirectionUrl is not accepted: this service allows no redirect origins (REDIRECTION_URL_ORIGINS)' : 'redirectionUrl must point to one of the origins this service allows');
  }

  /**
   * A new resume token for the session; stored, it replaces (so revokes) the session's previous one. It expires no
   * later than the session's erasure by the retention purge (RETENTION_DAYS after `createdAt`): the expiry told to the
   * app is one the token keeps.
   */
  function mintResume(interviewId: string, createdAt: number) {
    const now = Date.now();
    const expiresAt = Math.min(now + config.resumeTokenTtlSeconds * 1000, erasedAt(createdAt));
    // Past its retention, not yet purged (the sweep is hourly): no token that would be expired as it is handed out.
    if (expiresAt <= now) throw pastRetention();
    const { resumeToken, tokenHash } = mintResumeToken(interviewId);
    return { resumeToken, stored: { tokenHash, expiresAt } };
  }

  /** When the retention purge erases a session created at `createdAt`. */
  const erasedAt = (createdAt: number) => createdAt + config.retentionDays * 86_400_000;
  const pastRetention = () => new AppError(404, 'SESSION_NOT_FOUND', 'The session is past its retention period and is being erased');

  function answer(interviewId: string, token: string, r: ReturnType<typeof mintResume>) {
    return { token, interviewId, apiUrl: opts.sdkApiUrl, resumeToken: r.resumeToken, resumeTokenExpiresAt: new Date(r.stored.expiresAt).toISOString() };
  }

  /** An existing session again: with Incode's fresh token (resume), or with the token it has (Idempotency-Key replay). */
  async function reissue(interviewId: string, createdAt: number, token: string, fresh: boolean) {
    const r = mintResume(interviewId, createdAt);
    const { tokenHash, expiresAt } = r.stored;
    // A fresh Incode token is kept in the same single write as the new resume token: never one without the other.
    const taken = await app.store.createResumeToken(tokenHash, interviewId, expiresAt, fresh ? { token, now: Date.now() } : undefined);
    // Erased while Incode was asked (the write skips an erased session): its new token is not handed out.
    if (!taken) throw new AppError(404, 'SESSION_NOT_FOUND', 'The session was erased');
    return answer(interviewId, token, r);
  }

  app.post(
    '/session',
    {
      bodyLimit: config.limits.sessionBodyBytes,
      // The body is optional: no body at all (an empty one included) means every default.
      onRequest: [emptyBodyAsNone, ...guards.onRequest],
      preValidation: (req, _reply, done) => {
        if (req.body === undefined) req.body = {};
        done();
      },
      preHandler: guards.preHandlers(checkStartOptions),
      schema: {
        summary: 'Start an Incode onboarding and get its session token',
        tags: ['session'],
        ...callerSecurity(config.callerAuth.mode),
        // Unless callers are told apart by JWT, everyone shares one key space, and a replay answers the session's
        // token (which reads the person's results at Incode): a key someone else can guess hands them the session.
        // Length is no entropy, but it refuses the counters and short labels no one should use (a UUID has 36).
        headers: IdempotencyKeyHeaders('At least 16 characters and unguessable (a UUID v4): a retry with the same key and body gets the same session', 16),
        body: SessionBody,
        response: withErrors({ 200: SessionResponse }, [...WITH_BODY, ...RATE_LIMITED, 401, 403, 404, 409, 422, 502, 504]),
      },
    },
    async (req) => {
      const body = req.body;
      const startReq: StartRequest = {
        countryCode: body.countryCode ?? 'ALL',
        configurationId: body.configurationId ?? config.incode.configurationId,
        externalCustomerId: body.externalCustomerId,
        language: body.language,
        redirectionUrl: body.redirectionUrl,
      };
      // A database known to be down could not keep the session Incode would create (and bill): refused unsent, and
      // before an Idempotency-Key is claimed, which would hold the key past the retry the answer asks for.
      if (app.databaseOutage.down) throw databaseUnavailableError();
      return guards.idempotent(req, () => startReq, async (claimed) => {
        // A start still waiting for a connection at its claim's deadline (Incode slow, the pool full) is dropped unsent,
        // and its key freed, rather than sent beside a retry that took the key over; so is one whose caller left
        // meanwhile (it gave up waiting): no one would get the session it pays for.
        const started = await app.incode.start(startReq, { requestId: req.id, sendBefore: claimed?.sendBefore, callerGone: callerGone(req) });
        app.metrics.sessionsCreated.inc({ route: 'session' });
        const r = mintResume(started.interviewId, Date.now());
        await app.results
          .trackSession({
            interviewId: started.interviewId,
            token: started.token,
            externalCustomerId: body.externalCustomerId,
            configurationId: startReq.configurationId,
            resume: r.stored,
            idempotency: claimed,
          })
          .catch((err: unknown) => {
            // Created (and billed) at Incode, followed by no one: its id is the operator's only way to find it there.
            req.log.warn({ interviewId: started.interviewId }, 'Incode started this session but it could not be recorded: no one follows it');
            throw err;
          });
        return answer(started.interviewId, started.token, r);
      }, async (interviewId) => {
        const s = await app.store.getSession(interviewId);
        if (!s?.token) throw new AppError(404, 'SESSION_NOT_FOUND', 'The session of this Idempotency-Key no longer exists');
        // As for /session/resume: a token of a finished onboarding could still read its scores and OCR data from Incode.
        if (isTerminal(s.onboardingStatus)) throw sessionFinished();
        // The retrying caller never saw the first answer, so its resume token is replaced, not repeated (only hashes are kept).
        return reissue(interviewId, s.createdAt, s.token, false);
      });
    },
  );

  app.post(
    '/session/resume',
    {
      bodyLimit: config.limits.sessionBodyBytes,
      onRequest: guards.onRequest,
      preHandler: guards.preHandlers(),
      schema: {
        summary: 'Exchange a resume token for a fresh token of the same onboarding (no new Incode session)',
        tags: ['session'],
        ...callerSecurity(config.callerAuth.mode),
        body: ResumeBody,
        response: withErrors({ 200: SessionResponse }, [...WITH_BODY, ...RATE_LIMITED, 401, 403, 404, 409, 502, 504]),
      },
    },
    async (req) => {
      const parsed = parseResumeToken(req.body.resumeToken);
      // Spent before Incode is called, so concurrent requests with one token get one fresh token, not several.
      // The spend holds the token as long as an Idempotency-Key holds a start: if this request never restores it (its
      // process dies), the token can be spent again after that.
      const now = Date.now();
      const { leaseExpiresAt: holdUntil, sendBefore } = claimDeadlines(config, now);
      const spent = parsed && (await app.store.consumeResumeToken(parsed.interviewId, parsed.tokenHash, now, holdUntil));
      if (!parsed || !spent) throw new AppError(401, 'INVALID_RESUME_TOKEN', 'Resume token is unknown, expired or already used');
      // A valid token proves the session exists and is not erased: erasure and the retention purge clear it.
      const { interviewId } = parsed;
      const { expiresAt, heldUntil, createdAt } = spent;
      // Under JWT_CUSTOMER_ID_CLAIM, only the user the session was started for: a resume token that leaked (a QR code
      // seen over a shoulder, a link forwarded) is no use to anyone else's login, and it stays the owner's to use.
      if (config.callerAuth.customerIdClaim !== undefined) {
        try {
          guards.assertOwner(req, (await app.store.getSession(interviewId))?.externalCustomerId ?? null);
        } catch (err) {
          await app.store.restoreResumeToken(interviewId, parsed.tokenHash, expiresAt, heldUntil).catch(() => undefined);
          throw err;
        }
      }
      // A finished onboarding needs no token any more, and a fresh one could still read its scores and OCR data from
      // Incode: a resume token that leaked from the app is worth nothing once the flow is over. (It stays spent.)
      if (isTerminal(spent.onboardingStatus)) throw sessionFinished();
      // Nor one past its retention: Incode is not asked for a token the answer could not carry.
      if (erasedAt(createdAt) <= now) throw pastRetention();
      let answer;
      try {
        // The session's own flow where it is known: Incode documents configurationId as required on start.
        // Sent before the hold's deadline, or not at all: a start still waiting past it could run beside a second
        // exchange of the same token, once the hold is over.
        const started = await app.incode.start({ interviewId, ...(spent.configurationId ? { configurationId: spent.configurationId } : {}) }, { requestId: req.id, sendBefore, callerGone: callerGone(req) });
        if (started.interviewId !== interviewId) throw new AppError(502, 'INCODE_BAD_RESPONSE', 'Incode answered another session');
        answer = await reissue(interviewId, createdAt, started.token, true);
      } catch (err) {
        // Incode failed, or the new tokens could not be kept (the database failed: a 503 to retry): the app keeps its
        // token to try again (unless a newer one was issued meanwhile). Not for an erased session (404), which has
        // nothing to resume.
        if (!(err instanceof AppError && err.statusCode === 404)) await app.store.restoreResumeToken(interviewId, parsed.tokenHash, expiresAt, heldUntil).catch(() => undefined);
        throw err;
      }
      // The user is back: polling that gave up on the session watches it again (a failure here must not cost the
      // token just issued; the next webhook's status move revives it too).
      if (spent.revivable) await app.results.revive(interviewId, undefined, req.id).catch((err: unknown) => req.log.error({ interviewId, err: loggedError(err) }, 'polling not resumed'));
      return answer;
    },
  );

  app.get(
    '/session/onboarding-url',
    {
      schema: {
        summary: "The hosted-flow link of the caller's own session (Incode onboarding-url with INCODE_CLIENT_ID), for apps that do not embed the SDK",
        tags: ['session'],
        security: SESSION_TOKEN_SECURITY,
        headers: SessionTokenHeaders,
        response: withErrors({ 200: Type.Object({ url: Type.String() }) }, [401, 404, 502, 504]),
      },
    },
    async (req) => {
      // The caller first: an unauthenticated request learns nothing about the configuration.
      const session = await sessionForToken(app.store, req.headers['x-incode-hardware-id']);
      const { clientId } = config.incode;
      // Incode builds the link from the client id; without it the call could only fail upstream (a misleading 502).
      if (!clientId) throw new AppError(404, 'ONBOARDING_URL_NOT_CONFIGURED', 'Hosted-flow links need INCODE_CLIENT_ID');
      const { url } = await app.incode.getOnboardingUrl(session.token!, clientId, { requestId: req.id, callerGone: callerGone(req) });
      if (typeof url !== 'string') throw new AppError(502, 'INCODE_BAD_RESPONSE', 'Incode answered without a url');
      return { url };
    },
  );

  app.get(
    '/session/status',
    {
      schema: {
        summary: "The app's view of its own session: status and decision only, no personal data",
        tags: ['session'],
        security: SESSION_TOKEN_SECURITY,
        headers: SessionTokenHeaders,
        response: withErrors({ 200: StatusResponse }, [401]),
      },
    },
    async (req) => {
      const session = await sessionForToken(app.store, req.headers['x-incode-hardware-id']);
      return { interviewId: session.interviewId, onboardingStatus: session.onboardingStatus, resultsStatus: session.resultsStatus, decision: session.decision };
    },
  );
};

export default sessionRoutes;
