// Executive token cache: one login in flight at a time, renewed well before Incode's 24 h expiry.
import type { Config } from '../config';
import type { CallContext, IncodeClient } from './client';
import { IncodeError } from './errors';
import { untilAborted } from '../util/settle';
import { jwtClaims } from './token-claims';

const LIFETIME_MS = 24 * 60 * 60 * 1000;
/** After a failed login, how long callers get its error (or the token still held) instead of another login. */
const LOGIN_RETRY_MS = 30_000;

export class ExecutiveTokenProvider {
  private token: string | null = null;
  private expiresAt = 0;
  /** When to log in again: before expiry by renewBeforeMs, or by a quarter of the lifetime when that is shorter. */
  private renewAt = 0;
  private inflight: Promise<string> | null = null;
  /** A failed login: every caller would otherwise start its own, each sending the credentials Incode just refused. */
  private failed: { err: unknown; until: number } | null = null;

  constructor(
    private readonly client: IncodeClient,
    private readonly credentials: { email: string; password: string } | undefined,
    /** Renew when less than this much lifetime is left. */
    private readonly renewBeforeMs = 60 * 60 * 1000,
    private readonly now: () => number = Date.now,
    /**
     * Told of each failed login (its error code): a renewal that fails while the held token still serves is thrown at
     * no one, and a rotated password must not stay unnoticed until the token expires and every job fails.
     */
    private readonly onLoginFailed?: (code: string) => void,
  ) {}

  /** With the executive credentials of the configuration, if any. */
  static fromConfig(client: IncodeClient, config: Config, onLoginFailed?: (code: string) => void): ExecutiveTokenProvider {
    const { executiveEmail: email, executivePassword: password } = config.incode;
    return new ExecutiveTokenProvider(client, email && password ? { email, password } : undefined, undefined, undefined, onLoginFailed);
  }

  get configured(): boolean {
    return !!this.credentials;
  }

  /**
   * The login a call starts carries that call's request id; not its abort signal, since the login is shared by every
   * caller waiting on it (and one caller stopping is no reason to fail the others). A caller whose signal aborts (its
   * job's deadline, a shutdown) stops waiting at once; the login goes on for the others.
   */
  async get(ctx?: Pick<CallContext, 'requestId' | 'signal'>): Promise<string> {
    if (!this.credentials) throw new Error('executive credentials are not configured');
    const now = this.now();
    if (this.token && now < this.renewAt) return this.token;
    if (this.failed && now < this.failed.until && !this.inflight) {
      const held = this.stillValid(now);
      if (held) return held;
      throw this.failed.err;
    }
    if (!this.inflight) {
      const { email, password } = this.credentials;
      this.inflight = this.client
        .executiveLogin(email, password, ctx?.requestId ? { requestId: ctx.requestId } : undefined)
        .then(
          (r) => {
            const lifetime = jwtLifetimeMs(r.token) ?? LIFETIME_MS;
            const at = this.now();
            this.token = r.token;
            this.expiresAt = at + lifetime;
            // A token living no longer than the margin would otherwise be renewed at every call.
            this.renewAt = this.expiresAt - Math.min(this.renewBeforeMs, lifetime / 4);
            this.failed = null;
            return r.token;
          },
          (err: unknown) => {
            this.failed = { err, until: this.now() + LOGIN_RETRY_MS };
            this.onLoginFailed?.(err instanceof IncodeError ? err.code : 'INTERNAL_ERROR');
            throw err;
          },
        )
        .finally(() => {
          this.inflight = null;
        });
      // A renewal no caller waits for (a token still serves) must not be an unhandled rejection when it fails.
      this.inflight.catch(() => undefined);
    }
    // A token that still works serves while its early renewal is in flight: no caller waits on a login it does not
    // need, and a renewal that fails is no reason to drop it (its failure is kept in `failed`; the token serves until
    // it expires, or a 401 drops it).
    const held = this.stillValid(now);
    if (held) return held;
    return untilAborted(this.inflight, ctx?.signal, () => new IncodeError('INCODE_TIMEOUT', 'executiveLogin', 'Stopped while waiting for the executive login', { notSent: true }));
  }

  /** The token held, while it has not expired. */
  private stillValid(now: number): string | null {
    return this.token && now < this.expiresAt ? this.token : null;
  }

  /**
   * After a 401 the token is dropped so the next get() logs in again; only the one refused (`token`, when known): a
   * newer one a renewal stored meanwhile stays, or every call still in flight on the old one would log in again.
   */
  invalidate(token?: string): void {
    if (token !== undefined && token !== this.token) return;
    this.token = null;
    this.failed = null;
  }
}

/** Reads exp-iat from a JWT-shaped token when present; Incode documents 24 h, the token may say otherwise. */
function jwtLifetimeMs(token: string): number | undefined {
  const { iat, exp } = jwtClaims(token) ?? {};
  return typeof exp === 'number' && typeof iat === 'number' && exp > iat ? (exp - iat) * 1000 : undefined;
}
