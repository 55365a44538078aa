// Incode's onboarding-status webhook: OAuth 2.0 client-credentials token endpoint and the authenticated receiver.
import { createHmac, randomBytes } from 'node:crypto';
import formbody from '@fastify/formbody';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import type { Config } from '../config';
import { AppError, retryAfter } from '../errors';
import { type Mapped, sendError } from '../plugins/error-handler';
import { RATE_LIMITED, type Security, WITH_BODY, withErrors } from '../schemas';
import { bearer, keyMatcher, safeEqual } from '../security';
import { isKnownStatus, loggedStatus } from '../results/status';
import { failureLimiter, requestNetwork } from '../protection/rate-counter';
import { parseJsonBodyLeniently } from '../util/json-body';

/** What the webhook route notes on its request for the metrics hook. */
type WebhookRequest = FastifyRequest & { webhookAuth?: string; webhookOutcome?: 'duplicate' | 'ignored'; body?: { onboardingStatus?: unknown } };

/** The outcome label of an answer: `ok` for a 2xx, else a fixed name per kind of refusal. */
function outcomeOf(statusCode: number, ok: string): string {
  if (statusCode < 300) return ok;
  if (statusCode === 401 || statusCode === 403) return 'rejected';
  if (statusCode === 429) return 'limited';
  if (statusCode < 500) return 'invalid';
  return 'error';
}

const WebhookBody = Type.Object(
  {
    interviewId: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' })),
    // Any printable text: Incode's list of statuses grows, and a status it signed for must not be refused (and after its
    // retries, lost) over its spelling. The verify job reads the real status from Incode; this one is only the hint.
    // Absent: a webhook of another type (Incode configures one URL per type, and an operator may point several here).
    onboardingStatus: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[\\x20-\\x7E]*[\\x21-\\x7E][\\x20-\\x7E]*$' })),
    // Not checked, for the same reason. externalId is never stored; clientId and flowId are kept, cut to a bounded length.
    externalId: Type.Optional(Type.Unknown()),
    clientId: Type.Optional(Type.Unknown()),
    flowId: Type.Optional(Type.Unknown()),
  },
  {
    additionalProperties: true,
    description: 'An onboarding-status webhook (interviewId and onboardingStatus); a webhook of another type (no onboardingStatus) is acknowledged and ignored',
  },
);

const TokenBody = Type.Object(
  { grant_type: Type.String({ maxLength: 64 }), scope: Type.Optional(Type.String({ maxLength: 256 })) },
  { additionalProperties: true },
);

/** The token endpoint's refusals: the service's error body with RFC 6749's two fields (section 5.2). */
const OAuthError = Type.Object(
  {
    code: Type.String(),
    message: Type.String(),
    requestId: Type.Optional(Type.String()),
    error: Type.Optional(Type.String({ description: 'RFC 6749: invalid_client, unsupported_grant_type or invalid_request (absent for a refusal of another kind, e.g. a limit)' })),
    error_description: Type.Optional(Type.String()),
  },
  { additionalProperties: true },
);

/**
 * How long after its advertised expiry a webhook token is still taken: Incode may send a webhook with a token it holds
 * up to its `expires_in`, and that webhook arrives a moment later (the other replicas' clocks too may run ahead).
 */
export const WEBHOOK_TOKEN_GRACE_SECONDS = 60;

/**
 * Stateless access tokens (HMAC over expiry and nonce) so any replica can check what another issued. Signed under the
 * key of the secret the token was asked for with; any listed secret's key verifies, so the tokens Incode holds stay
 * good through a rotation of the client secret (the old one listed second until they have expired), and taking a
 * secret off the list (one that leaked) takes every token issued for it with it.
 */
export class WebhookTokens {
  private readonly keys: Buffer[];
  constructor(secrets: readonly string[], private readonly ttlSeconds: number) {
    this.keys = secrets.map((secret) => createHmac('sha256', 'incode-broker/webhook-token').update(secret).digest());
  }
  /** A token for the client that authenticated with the `secret`-th secret (0: the first). */
  issue(now = Date.now(), secret = 0): { token: string; expiresIn: number } {
    // Rounded up: never a moment shorter than the `expires_in` told.
    const exp = Math.ceil(now / 1000) + this.ttlSeconds;
    const body = `whk1.${exp}.${randomBytes(12).toString('base64url')}`;
    return { token: `${body}.${this.mac(this.keys[secret], body)}`, expiresIn: this.ttlSeconds };
  }
  verify(token: string, now = Date.now()): boolean {
    const parts = token.split('.');
    if (parts.length !== 4 || parts[0] !== 'whk1') return false;
    const body = parts.slice(0, 3).join('.');
    // Every key compared, each in constant time: which one matched is not told by the time taken.
    let signed = false;
    for (const key of this.keys) signed = safeEqual(parts[3], this.mac(key, body)) || signed;
    return signed && (Number(parts[1]) + WEBHOOK_TOKEN_GRACE_SECONDS) * 1000 > now;
  }
  private mac(key: Buffer, body: string): string {
    return createHmac('sha256', key).update(body).digest('base64url');
  }
}

/**
 * The client id and secret of a Basic header, as sent and form-decoded. RFC 6749 §2.3.1 form-urlencodes both before
 * the Basic encoding; Incode documents plain `base64(client_id:client_secret)`. A secret with `+` or `%` reads
 * differently under the two, so both readings are kept and either may match.
 */
function basicCredentials(header: string | undefined): { id: string; secret: string }[] {
  const m = header && /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return [];
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return [];
  const raw = { id: decoded.slice(0, i), secret: decoded.slice(i + 1) };
  const dec = (s: string) => {
    try {
      return decodeURIComponent(s.replace(/\+/g, ' '));
    } catch {
      return s;
    }
  };
  return [raw, { id: dec(raw.id), secret: dec(raw.secret) }];
}

/**
 * Which of the secrets (one keyMatcher each, in order) a reading matches with the id, or -1 for none; every comparison
 * runs, so the time taken tells nothing of which.
 */
function matchingSecret(readings: { id: string; secret: string }[], id: string, secrets: readonly ((candidate: string) => boolean)[]): number {
  let found = -1;
  for (const r of readings) {
    const idOk = safeEqual(r.id, id);
    secrets.forEach((matches, i) => {
      if (matches(r.secret) && idOk && found < 0) found = i;
    });
  }
  return found;
}

/** RFC 6749's error for a refused token request (section 5.2); none for a limit, an outage or a missing endpoint. */
function oauthErrorFields(m: Mapped): Record<string, string> {
  const error =
    m.code === 'INVALID_CLIENT' ? 'invalid_client' : m.code === 'UNSUPPORTED_GRANT_TYPE' ? 'unsupported_grant_type' : m.status === 400 || m.status === 413 || m.status === 415 ? 'invalid_request' : null;
  return error ? { error, error_description: m.message } : {};
}

/** Failed token requests one network may make in a minute before every request from it is refused. */
const TOKEN_FAILURES_PER_MINUTE = 30;

const webhookRoutes: FastifyPluginAsyncTypebox<{ config: Config }> = async (app, opts) => {
  const cfg = opts.config.webhook;
  const { clientId, clientSecret } = cfg;
  // In this scope only: Incode's webhooks are read leniently (util/json-body).
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, parseJsonBodyLeniently);
  const tokenFailures = failureLimiter(app.rateCounter, TOKEN_FAILURES_PER_MINUTE, 60_000);
  // The new secret first, then the one a rotation replaces: each token is signed under the one it was asked for with.
  const clientSecrets = [cfg.clientSecret, cfg.previousClientSecret].filter((k): k is string => !!k);
  const clientSecretMatchers = clientSecrets.map((secret) => keyMatcher([secret]));
  const staticSecrets = [cfg.secret, cfg.previousSecret].filter((k): k is string => !!k);
  const staticSecretMatches = keyMatcher(staticSecrets);
  const tokens = cfg.clientId && cfg.clientSecret ? new WebhookTokens(clientSecrets, cfg.tokenTtlSeconds) : null;
  // The form parser in a scope of the token endpoint's own: the webhook itself, like every other route, takes JSON only.
  const tokenScope: FastifyPluginAsyncTypebox = async (scope) => {
    await scope.register(formbody, { bodyLimit: 4096 });
    // An OAuth client reads `error` (RFC 6749 section 5.2); the body keeps the broker's `code` beside it.
    scope.setErrorHandler((err, req, reply) => sendError(err, req, reply, oauthErrorFields));

    scope.post(
      '/webhooks/incode/token',
      {
        bodyLimit: 4096,
        onResponse: (req, reply, done) => {
          app.metrics.webhooks.inc({ status: 'token', auth: (req as WebhookRequest).webhookAuth ?? 'unchecked', outcome: outcomeOf(reply.statusCode, 'issued') });
          done();
        },
        schema: {
          summary: 'OAuth 2.0 client-credentials token endpoint Incode calls before sending webhooks',
          tags: ['webhooks'],
          // RFC 6749 asks for a form; a JSON body is taken too, as some OAuth clients send one.
          consumes: ['application/x-www-form-urlencoded', 'application/json'],
          security: [{ webhookClient: [] }],
          body: TokenBody,
          response: withErrors(
            { 200: Type.Object({ access_token: Type.String(), token_type: Type.Literal('Bearer'), expires_in: Type.Integer() }), 400: OAuthError, 401: OAuthError, 413: OAuthError, 415: OAuthError },
            [...WITH_BODY, ...RATE_LIMITED, 404],
          ),
        },
      },
      async (req) => {
        if (!tokens || !clientId || !clientSecret) throw new AppError(404, 'OAUTH_NOT_CONFIGURED', 'Webhook OAuth is not configured (WEBHOOK_CLIENT_ID)');
        // Guessing the client secret is the attack here: failed attempts are counted per network, and a network over
        // the limit is refused before its credentials are even checked. Only failures count: Incode, asking from its
        // own network, is never limited however often it asks (it may fetch a token for every webhook it sends).
        let secret = -1;
        const check = await tokenFailures(`whtoken:${requestNetwork(req)}`, () => (secret = matchingSecret(basicCredentials(req.headers.authorization), clientId, clientSecretMatchers)) >= 0);
        if (check.outcome !== 'passed') {
          // Refused unread: its credentials were never looked at.
          (req as WebhookRequest).webhookAuth = check.outcome === 'failed' ? 'rejected' : 'unchecked';
          if (check.outcome === 'refused')
            throw new AppError(429, 'RATE_LIMITED', 'Too many failed token requests from this network', { ...retryAfter(check.resetMs), 'x-ratelimit-limit': String(TOKEN_FAILURES_PER_MINUTE) });
          throw new AppError(401, 'INVALID_CLIENT', 'Client authentication failed', { 'www-authenticate': 'Basic realm="webhooks"' });
        }
        (req as WebhookRequest).webhookAuth = 'oauth';
        if (req.body.grant_type !== 'client_credentials') throw new AppError(400, 'UNSUPPORTED_GRANT_TYPE', 'grant_type must be client_credentials');
        // Signed under the secret it was asked with: the first (the new one), or the one it replaces.
        const t = tokens.issue(Date.now(), secret);
        return { access_token: t.token, token_type: 'Bearer' as const, expires_in: t.expiresIn };
      },
    );
  };
  await app.register(tokenScope);

  function authenticate(req: FastifyRequest): string | null {
    const bearerToken = bearer(req.headers.authorization);
    if (tokens && bearerToken && tokens.verify(bearerToken)) return 'oauth';
    if (staticSecrets.length) {
      const got = req.headers[cfg.secretHeader];
      if (typeof got === 'string' && staticSecretMatches(got)) return 'secret';
    }
    if (!tokens && !cfg.secret && cfg.allowUnauthenticated) return 'none';
    return null;
  }

  // Whichever is configured; with neither (WEBHOOK_ALLOW_UNAUTHENTICATED, never in production) none is checked.
  const webhookSecurity: Security = [...(tokens ? [{ webhookOAuth: [] }] : []), ...(cfg.secret ? [{ webhookSecret: [] }] : [])];
  app.post(
    '/webhooks/incode',
    {
      bodyLimit: 16384,
      schema: {
        summary: "Incode's onboarding-status webhook; recorded durably, then verified against Incode",
        tags: ['webhooks'],
        security: webhookSecurity,
        body: WebhookBody,
        response: withErrors({ 200: Type.Object({ success: Type.Boolean() }) }, [...WITH_BODY, 401]),
      },
      // Authentication before the body is even validated: an anonymous caller learns nothing.
      preValidation: async (req) => {
        const how = authenticate(req);
        (req as WebhookRequest).webhookAuth = how ?? 'rejected';
        if (!how) throw new AppError(401, 'UNAUTHORIZED', 'Webhook credentials are missing or wrong', { 'www-authenticate': 'Bearer' });
      },
      // Every answer counted, refusals and failures included: a 400 or a 503 here is a status Incode will retry and
      // may then lose, the alert that matters most.
      onResponse: (req, reply, done) => {
        const r = req as WebhookRequest;
        const sent = r.body?.onboardingStatus;
        const status = reply.statusCode >= 300 ? 'unknown' : sent === undefined ? 'none' : typeof sent === 'string' && isKnownStatus(sent) ? sent : 'OTHER';
        // `unchecked`: turned away before authentication ran (a malformed request, shutdown), so no credential failed.
        app.metrics.webhooks.inc({ status, auth: r.webhookAuth ?? 'unchecked', outcome: outcomeOf(reply.statusCode, r.webhookOutcome ?? 'recorded') });
        done();
      },
    },
    async (req) => {
      const { interviewId } = req.body;
      // Spaces around it are no part of a status (the schema asks for at least one character besides them); written
      // back, so the metric (onResponse) counts the status as recorded.
      const onboardingStatus = req.body.onboardingStatus?.trim();
      req.body.onboardingStatus = onboardingStatus;
      if (onboardingStatus === undefined) {
        // Another type of webhook (face authentication, watchlist, session events...): nothing this service acts on.
        // Acknowledged, or Incode would retry it for half an hour and count a failing endpoint; its field names are
        // logged (never its values) so an operator sees what is arriving here.
        (req as WebhookRequest).webhookOutcome = 'ignored';
        // Names shaped like field names only (letters and underscores): a key is text its sender chose, and could hold
        // anything, a user's id among it (digits, dots and dashes are what ids and e-mail addresses are made of).
        const keys = Object.keys(req.body);
        const fields = keys.filter((k) => /^[A-Za-z][A-Za-z_]{0,39}$/.test(k)).slice(0, 20);
        req.log.info({ fields, otherFields: keys.length - fields.length }, 'webhook of another type ignored (no onboardingStatus)');
        return { success: true };
      }
      if (interviewId === undefined) throw new AppError(400, 'VALIDATION_FAILED', 'body must have required property \'interviewId\' beside onboardingStatus');
      const { duplicate } = await app.results.ingestWebhook({ ...req.body, interviewId, onboardingStatus });
      if (duplicate) (req as WebhookRequest).webhookOutcome = 'duplicate';
      req.log.info({ interviewId, onboardingStatus: loggedStatus(onboardingStatus), duplicate }, 'webhook recorded');
      return { success: true };
    },
  );
};

export default webhookRoutes;
