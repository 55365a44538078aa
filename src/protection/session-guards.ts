// Cost protection for routes that create billable Incode sessions: caller auth, rate limits, idempotency keys.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config';
import { AppError, retryAfter, retryAfterSeconds } from '../errors';
import { CUSTOMER_ID_PATTERN } from '../schemas';
import { IncodeError } from '../incode/errors';
import { OnboardingError } from '../onboarding/orchestrator';
import { loggedError } from '../logging';
import { bearer, keyedDigest, keyMatcher, sha256Hex } from '../security';
import type { ClaimedKey, IdempotencyAnswer } from '../store/types';
import { SEND_MARGIN_MS } from '../store/rows';
import { createJwtVerifier, tokenJudged } from './jwt-verifier';
import { ipv6Site, requestNetwork, type RateLimitEntry } from './rate-counter';

/**
 * How long a pending Idempotency-Key claim holds: longer than any Incode call, so a retry meanwhile gets 409; if the
 * process dies mid-request, a retry may take the key over after it rather than get 409 for the whole TTL. Completion
 * sets it to the TTL. Never shortened to a short TTL: a lease that a start can outlast would let a retry take the key
 * over and start a second billed session beside it (and leave no room for a send deadline).
 */
function startLeaseMs(config: Pick<Config, 'incode'>): number {
  return Math.max(60_000, 4 * config.incode.timeoutMs);
}


/**
 * When a claim made at `now` lapses, and the latest moment its start may be sent (ClaimedKey.sendBefore). A start sent
 * then may take INCODE_TIMEOUT_MS for its headers and as long again for its body (undici times the two apart), so
 * twice the timeout is kept free before the lease ends.
 */
export function claimDeadlines(config: Pick<Config, 'incode'>, now: number): { leaseExpiresAt: number; sendBefore: number } {
  const leaseExpiresAt = now + startLeaseMs(config);
  // At least 4 x the timeout: always more than twice the timeout and the margin ahead.
  return { leaseExpiresAt, sendBefore: leaseExpiresAt - 2 * config.incode.timeoutMs - SEND_MARGIN_MS };
}

/** A route's synchronous check of a request as a preHandler hook (callback style: no promise per request). */
function sync(check: (req: FastifyRequest) => void) {
  return function checkRequest(req: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void): void {
    try {
      check(req);
    } catch (err) {
      return done(err as Error);
    }
    done();
  };
}

// Characters that display as nothing (zero-width, soft hyphen, variation selectors, tags, fillers...): they must not
// make one customer id look like many.
const INVISIBLE = /[\p{Default_Ignorable_Code_Point}\u180e]/gu;

/**
 * One spelling per customer id for its rate limit: "Victim", "VICTIM", "victim\u00a0", "vic\u200btim" and "victim\ufe0f"
 * are one customer, and so are "Strasse" and "Straße" (upper-casing first folds ß to SS, as full case folding does).
 * The invisibles go first: one between a letter and its combining accent ("Jose\u200b\u0301") would keep NFKC from
 * composing the pair, and removed afterwards would leave a spelling of "José" of its own; and again after NFKC, which
 * maps some characters to invisible ones. NFKC again at the end: case mapping can decompose.
 */
export function foldCustomerId(id: string): string {
  // Lower-cased first too: capital ẞ upper-cases to itself, and only from ß does upper-casing reach SS.
  return id.replace(INVISIBLE, '').normalize('NFKC').replace(INVISIBLE, '').trim().toLowerCase().toUpperCase().toLowerCase().normalize('NFKC');
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who called, for rate-limit and idempotency scopes: an app key's or a service key's hash, a JWT subject's keyed digest, or nobody. */
    caller?: string;
    /**
     * The user id the caller's JWT names in JWT_CUSTOMER_ID_CLAIM (null: the token lacks it); unset where no such claim
     * is configured.
     */
    callerCustomerId?: string | null;
  }
}

type GuardHook = ((req: FastifyRequest, reply: FastifyReply) => Promise<void>) | ((req: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => void);

export interface SessionGuards {
  /**
   * The onRequest hooks of a billable route: caller authentication, if configured, from the headers alone, before the
   * body is read or validated (an unauthenticated caller learns nothing of what the route accepts).
   */
  onRequest: GuardHook[];
  /**
   * The preHandler hooks a billable route needs: only the configured ones, so an unused guard costs nothing. The
   * route's own checks of the request (`between`) run before the rate limits.
   */
  preHandlers(...between: Array<(req: FastifyRequest) => void>): GuardHook[];
  /**
   * With JWT_CUSTOMER_ID_CLAIM, the externalCustomerId a start goes under: the token's claim (the body's when it is the
   * same, the claim's when the body names none); 403 when the body names another or the token lacks the claim. Without
   * it, the body's.
   */
  customerIdOf(req: FastifyRequest, sent: string | undefined): string | undefined;
  /**
   * With JWT_CUSTOMER_ID_CLAIM, refuses (403) a caller whose token's claim is not `owner`, a session's externalCustomerId
   * (null: a session started for no one, which no user owns); without it, nothing.
   */
  assertOwner(req: FastifyRequest, owner: string | null): void;
  /**
   * Runs create() once per Idempotency-Key; a retry with the same key and body gets the same session. create()
   * gets the claimed key and must record it with the session it stores (NewSession.idempotency), in one write.
   * `request` builds what a retry must repeat, only when a key was sent (for an upload, digests of tens of MB).
   */
  idempotent<T>(
    req: FastifyRequest,
    request: () => unknown,
    create: (claimed?: ClaimedKey) => Promise<T>,
    replay: (interviewId: string, answer?: IdempotencyAnswer) => Promise<T>,
    opts?: IdempotencyOptions,
  ): Promise<T>;
}

export interface IdempotencyOptions {
  /** The keys' namespace: one key sent to two routes is two keys. 'session' by default. */
  route?: 'session' | 'onboarding';
  /** How long the route's work may run after its session is started (a completed key replays at least that long past the latest start). */
  runsForMs?: number;
}

/**
 * Incode certainly created nothing, so the key is released for a retry: the start never left or Incode refused it
 * outright (an OnboardingError says so of the start behind it, before any session existed).
 */
const certainlyNotStarted = (err: unknown) => (err instanceof IncodeError || err instanceof OnboardingError) && err.certainlyNotDone;

/** A claim still pending: its first request is running (here or on another replica). */
export const idempotencyInProgress = () => new AppError(409, 'IDEMPOTENCY_IN_PROGRESS', 'A request with this Idempotency-Key is still running; retry shortly', retryAfter(1000));

// With the `u` flag, as Ajv compiles it for the body: without it an emoji's two halves fall in the surrogate range.
const CUSTOMER_ID = new RegExp(CUSTOMER_ID_PATTERN, 'u');

export function createSessionGuards(app: FastifyInstance, config: Config): SessionGuards {
  const { callerAuth, rateLimit } = config;
  // A request (its externalCustomerId) and a customer's rate-limit key are kept only as keyed digests.
  const dataKeys = config.encryption.keys.map((k) => k.key);
  const requestDigest = keyedDigest(dataKeys, 'idempotency-request');
  const customerDigest = keyedDigest(dataKeys, 'rate-limit-customer');
  // A JWT subject names an end user (often an email): it scopes Idempotency-Keys, which are stored, so only a keyed
  // digest of it is kept. (Under a new first data key the digest changes: a key in flight across a rotation is new.)
  const subjectDigest = keyedDigest(dataKeys, 'caller-subject');
  const appKeyMatches = keyMatcher(callerAuth.appKeys);
  const { customerIdClaim } = callerAuth;
  const verify = createJwtVerifier({
    jwksUrl: callerAuth.jwksUrl!,
    issuer: callerAuth.issuer!,
    audience: callerAuth.audience!,
    // The refusals it causes are warn lines without frames (AUTH_UNAVAILABLE is a deliberate 503): its cause is here.
    onKeySetFailure: (err) => app.log.warn({ jwksUrl: callerAuth.jwksUrl, err: loggedError(err) }, "the identity provider's key set (JWT_JWKS_URL) could not be fetched: bearer tokens are refused with 503 until it can"),
  });

  async function authenticate(req: FastifyRequest): Promise<void> {
    if (callerAuth.mode === 'app-keys') {
      const key = req.headers['x-app-key'];
      if (typeof key !== 'string' || !appKeyMatches(key)) throw new AppError(401, 'UNAUTHORIZED', 'A valid X-App-Key header is required', { 'www-authenticate': 'ApiKey header="x-app-key"' });
      req.caller = `key:${sha256Hex(key).slice(0, 16)}`;
      return;
    }
    const token = bearer(req.headers.authorization);
    if (!token) throw new AppError(401, 'UNAUTHORIZED', 'A bearer token from your identity provider is required', { 'www-authenticate': 'Bearer' });
    try {
      const payload = await verify(token);
      // Without a subject, the token itself is the caller: never one scope shared by every such token.
      req.caller = typeof payload.sub === 'string' && payload.sub ? `sub:${subjectDigest.digest(payload.sub).slice(0, 32)}` : `jwt:${sha256Hex(token).slice(0, 16)}`;
      if (customerIdClaim !== undefined) {
        const named = payload[customerIdClaim];
        req.callerCustomerId = typeof named === 'string' && named !== '' ? named : null;
      }
    } catch (err) {
      // The identity provider's key set could not be had: the token is not known to be bad, so no invalid_token (a
      // client would refresh it, or sign its user out) but a 503 to retry.
      if (!tokenJudged(err)) throw new AppError(503, 'AUTH_UNAVAILABLE', "The identity provider's signing keys could not be fetched; retry shortly", retryAfter(5000));
      throw new AppError(401, 'UNAUTHORIZED', 'Bearer token is invalid, expired or not for this service', { 'www-authenticate': 'Bearer error="invalid_token"' });
    }
  }

  async function rateLimitHook(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    // req.ip honours TRUST_PROXY_HOPS: X-Forwarded-For is read only as deep as the configured proxies.
    const limits: (RateLimitEntry & { what: string })[] = [];
    const network = rateLimit.perIp > 0 || rateLimit.perIpv6Site > 0 ? requestNetwork(req) : '';
    if (rateLimit.perIp > 0) limits.push({ key: `ip:${network}`, max: rateLimit.perIp, what: 'from this address' });
    // In jwt mode a caller is one end user (a token's subject): its budget whatever address or customer id it sends.
    if (rateLimit.perSubject > 0 && callerAuth.mode === 'jwt' && req.caller) limits.push({ key: `caller:${req.caller}`, max: rateLimit.perSubject, what: 'for this user' });
    const ext = (req.body as { externalCustomerId?: unknown } | undefined)?.externalCustomerId;
    // Per calling app (one app's users never use up another's budget), and spelled one way (foldCustomerId). With JWTs
    // every token is the one app's (a caller is one of its users): per user, as many accounts as anyone signs up for
    // would each have the customer's whole budget.
    const callerApp = callerAuth.mode === 'jwt' ? 'jwt' : (req.caller ?? 'anonymous');
    // Under JWT_CUSTOMER_ID_CLAIM the id is the identity provider's, which no caller chooses: spelled as it is, or
    // users whose ids differ only in case (an IdP with case-sensitive ids) would share one budget.
    const customer = typeof ext === 'string' ? (customerIdClaim === undefined ? foldCustomerId(ext) : ext) : null;
    if (customer !== null && rateLimit.perCustomer > 0)
      limits.push({ key: `customer:${customerDigest.digest(`${callerApp}\n${customer}`)}`, max: rateLimit.perCustomer, what: 'for this customer' });
    // The /48 after the narrower limits: a request they refuse spends none of a network that many users may share.
    const site = rateLimit.perIpv6Site > 0 ? ipv6Site(network) : null;
    if (site) limits.push({ key: `ip:${site}`, max: rateLimit.perIpv6Site, what: 'from this network' });
    if (rateLimit.global > 0) limits.push({ key: 'global:all', max: rateLimit.global, what: 'for this service', shared: true });
    if (!limits.length) return;
    const over = await app.rateCounter.hitAll(limits, rateLimit.windowMs);
    // No limit was reached: the counter could not take this client's keys (it holds its most), so it is refused uncounted.
    if (over?.full) throw new AppError(429, 'RATE_LIMITED', `Too many clients are being counted right now; retry in ${retryAfterSeconds(over.resetMs)} s`, retryAfter(over.resetMs));
    if (over) {
      const { max, what } = limits[over.index];
      reply.header('x-ratelimit-limit', String(max));
      throw new AppError(429, 'RATE_LIMITED', `Too many sessions ${what}; retry in ${retryAfterSeconds(over.resetMs)} s`, retryAfter(over.resetMs));
    }
  }

  async function idempotent<T>(
    req: FastifyRequest,
    request: () => unknown,
    create: (claimed?: ClaimedKey) => Promise<T>,
    replay: (interviewId: string, answer?: IdempotencyAnswer) => Promise<T>,
    opts: IdempotencyOptions = {},
  ): Promise<T> {
    const raw = req.headers['idempotency-key'];
    if (typeof raw !== 'string' || raw === '') return create();
    const scope = `${opts.route ?? 'session'}:${req.caller ?? 'anonymous'}`;
    const key = sha256Hex(raw);
    const body = JSON.stringify(request());
    const requestHash = requestDigest.digest(body);
    const now = Date.now();
    const ttlMs = config.idempotencyTtlSeconds * 1000;
    const { leaseExpiresAt, sendBefore } = claimDeadlines(config, now);
    const claim = await app.store.claimIdempotencyKey(scope, key, requestHash, leaseExpiresAt, now);
    // Whatever the body: the erasure took the request's digests with it, and the key is not free for a second session.
    if (claim.state === 'erased') throw new AppError(404, 'SESSION_NOT_FOUND', 'The session of this Idempotency-Key was erased');
    // A completed key's digest is the request's SHA-256 kept in its (re-encryptable) response, which matches accepts
    // too: a key rotation that retired the key of the request_hash HMAC does not turn a faithful retry into a 422.
    const same = claim.state === 'new' || requestDigest.matches(claim.requestHash, body);
    if (!same)
      throw new AppError(422, 'IDEMPOTENCY_KEY_REUSED', 'This Idempotency-Key was used with a different request body');
    if (claim.state === 'pending') throw idempotencyInProgress();
    if (claim.state === 'done') return replay(claim.interviewId, claim.answer);
    try {
      // The key is marked done by the session's own write (only the id is kept, and a route's final answer if it keeps
      // one with recordIdempotencyAnswer; the token stays in sessions).
      // Completed, the key replays for the TTL, and at least as long as the first request could still have been running
      // (its lease; for a route's longer work, that work counted from the latest its session can have started): a retry
      // of it never starts a second billed session.
      const expiresAt = Math.max(now + ttlMs, leaseExpiresAt + (opts.runsForMs ?? 0));
      return await create({ scope, key, expiresAt, claimedAt: now, sendBefore, requestSha256: sha256Hex(body) });
    } catch (err) {
      // Released only when Incode certainly created nothing. Otherwise (a timeout, an unusable 2xx, a failure of ours
      // once Incode had answered) a session may exist and be billed: the key stays pending until its lease lapses, so a
      // retry meanwhile gets 409 instead of paying for a second one.
      if (certainlyNotStarted(err)) await app.store.releaseIdempotencyKey(scope, key, now).catch(() => undefined);
      throw err;
    }
  }

  const anyLimit = rateLimit.perIp > 0 || rateLimit.perIpv6Site > 0 || rateLimit.perCustomer > 0 || (rateLimit.perSubject > 0 && callerAuth.mode === 'jwt') || rateLimit.global > 0;
  const authentication = callerAuth.mode === 'none' ? [] : [authenticate];
  const limits = anyLimit ? [rateLimitHook] : [];
  // `between`: a route's own checks of the request, after the caller is known and before anything is counted, so a
  // request refused for its content never uses up a budget (a customer's, the service's) for nothing.
  const preHandlers = (...between: Array<(req: FastifyRequest) => void>) => [...between.map(sync), ...limits];

  function customerIdOf(req: FastifyRequest, sent: string | undefined): string | undefined {
    if (customerIdClaim === undefined) return sent;
    const named = claimedId(req, customerIdClaim);
    if (sent !== undefined && sent !== named) throw new AppError(403, 'CUSTOMER_ID_MISMATCH', `externalCustomerId must be the user the bearer token names (its "${customerIdClaim}" claim), or left out`);
    return named;
  }

  /** The user id the caller's token names in `claim`, as it has it; 403 when it has none a session could go under. */
  function claimedId(req: FastifyRequest, claim: string): string {
    const named = req.callerCustomerId;
    // Spelled as the token has it: the id Incode and the results API show is the identity provider's. One the body
    // could not carry (too long, control characters) is refused as the body's would be.
    if (typeof named !== 'string' || [...named].length > 128 || !CUSTOMER_ID.test(named))
      throw new AppError(403, 'CUSTOMER_ID_CLAIM_MISSING', `The bearer token has no usable "${claim}" claim (up to 128 characters, no control characters), which names the user sessions are started for (JWT_CUSTOMER_ID_CLAIM)`);
    return named;
  }
  function assertOwner(req: FastifyRequest, owner: string | null): void {
    if (customerIdClaim === undefined) return;
    const named = claimedId(req, customerIdClaim);
    if (owner === null) throw new AppError(403, 'CUSTOMER_ID_MISMATCH', 'This session was started for no user: it cannot be resumed under JWT_CUSTOMER_ID_CLAIM');
    if (owner !== named) throw new AppError(403, 'CUSTOMER_ID_MISMATCH', 'This session was started for another user');
  }
  return { onRequest: authentication, preHandlers, idempotent, customerIdOf, assertOwner };
}
