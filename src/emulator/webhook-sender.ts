// Onboarding-status webhooks the way Incode sends them: optional OAuth2 client-credentials, static headers, backoff retries.
import { request } from 'undici';
import type { Faults } from './faults';
import type { TimerSet } from './timer-set';

export interface WebhookOptions {
  url: string;
  oauth?: { tokenUrl: string; clientId: string; clientSecret: string };
  headers?: Record<string, string>;
  /**
   * Delays before each retry; Incode's newer docs: 30 s × 2.5^n, "max 5 attempts" beside five delays, read as five
   * retries after the first delivery (incode-api.md §5.3 and §7.2; the emulator's README says so).
   */
  retryDelaysMs?: number[];
  timeoutMs?: number;
}

export interface WebhookPayload {
  interviewId: string;
  externalId?: string;
  onboardingStatus: string;
  clientId: string;
  flowId?: string;
}

export interface DeliveryRecord {
  interviewId: string;
  onboardingStatus: string;
  attempts: number;
  outcome: 'delivered' | 'failed' | 'dropped' | 'pending';
  lastStatusCode?: number;
  lastError?: string;
  at: number;
}

export const DEFAULT_RETRY_DELAYS_MS = [30_000, 75_000, 187_500, 468_750, 1_171_880];
const RECENT_LIMIT = 200;

export class WebhookSender {
  private token?: { value: string; expiresAt: number };
  private tokenInFlight?: Promise<string>;
  private readonly abort = new AbortController();
  // Per-session chain of first attempts: one session's first deliveries leave in order (retries may still cross them,
  // as Incode documents no order).
  private readonly chains = new Map<string, Promise<void>>();
  /** Bounded log of recent deliveries, for the admin route and tests. */
  readonly recent: DeliveryRecord[] = [];
  readonly stats = { sent: 0, delivered: 0, failed: 0, dropped: 0, duplicated: 0, retries: 0, tokenRequests: 0 };
  private readonly retryDelays: number[];
  private readonly timeoutMs: number;

  constructor(
    private readonly opts: WebhookOptions,
    private readonly faults: Faults,
    private readonly timers: TimerSet,
    /** Whether the session still exists: a retry for a deleted one is not sent. */
    private readonly exists: (interviewId: string) => boolean = () => true,
  ) {
    this.retryDelays = opts.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  send(payload: WebhookPayload): void {
    const rec: DeliveryRecord = { interviewId: payload.interviewId, onboardingStatus: payload.onboardingStatus, attempts: 0, outcome: 'pending', at: Date.now() };
    this.remember(rec);
    if (this.faults.shouldDropWebhook()) {
      rec.outcome = 'dropped';
      this.stats.dropped++;
      return;
    }
    const copies = this.faults.shouldDuplicateWebhook() ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    const body = JSON.stringify(payload);
    const prev = this.chains.get(payload.interviewId) ?? Promise.resolve();
    const next = prev.then(async () => {
      await this.attempt(body, rec, 0);
      // The duplicate is one more delivery of the same body, sent once: it has no retries of its own, and its outcome
      // is not the webhook's.
      if (copies === 2) await this.post(body).catch(() => undefined);
    });
    this.chains.set(payload.interviewId, next);
    void next.finally(() => {
      if (this.chains.get(payload.interviewId) === next) this.chains.delete(payload.interviewId);
    });
  }

  private remember(rec: DeliveryRecord): void {
    this.recent.push(rec);
    if (this.recent.length > RECENT_LIMIT) this.recent.splice(0, this.recent.length - RECENT_LIMIT);
  }

  /** One POST of a webhook body: whether the receiver took it (Incode's newer rule: 200 with a JSON body, or 204). */
  private async post(body: string): Promise<{ ok: boolean; statusCode: number }> {
    // The static headers by their lowercase names, so the JSON type and the bearer below replace any of the same name
    // (sent twice, the receiver would read the first).
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(this.opts.headers ?? {})) headers[name.toLowerCase()] = value;
    headers['content-type'] = 'application/json';
    if (this.opts.oauth) headers.authorization = `Bearer ${await this.accessToken()}`;
    // Counted once it leaves: a delivery that never got its token sent nothing.
    this.stats.sent++;
    const res = await request(this.opts.url, {
      method: 'POST',
      headers,
      body,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      signal: this.abort.signal,
    });
    const ctype = String(res.headers['content-type'] ?? '');
    await res.body.text().catch(() => '');
    if (res.statusCode === 401 && this.opts.oauth && headers.authorization === `Bearer ${this.token?.value}`) this.token = undefined; // fetched anew on the retry
    return { ok: (res.statusCode === 200 && ctype.includes('application/json')) || res.statusCode === 204, statusCode: res.statusCode };
  }

  private async attempt(body: string, rec: DeliveryRecord, n: number): Promise<void> {
    if (this.abort.signal.aborted) return;
    // Deleted meanwhile (DELETE /omni/interview): Incode has nothing left to report on.
    if (n > 0 && !this.exists(rec.interviewId)) {
      rec.outcome = 'failed';
      rec.lastError = 'session deleted';
      this.stats.failed++;
      return;
    }
    rec.attempts++;
    let ok = false;
    try {
      const res = await this.post(body);
      rec.lastStatusCode = res.statusCode;
      ok = res.ok;
      rec.lastError = ok ? undefined : `HTTP ${res.statusCode}`;
    } catch (e) {
      rec.lastError = (e as Error).message;
    }
    if (ok) {
      rec.outcome = 'delivered';
      this.stats.delivered++;
      return;
    }
    if (n < this.retryDelays.length && !this.abort.signal.aborted) {
      this.stats.retries++;
      this.timers.set(() => void this.attempt(body, rec, n + 1), this.retryDelays[n]);
      return;
    }
    rec.outcome = 'failed';
    this.stats.failed++;
  }

  /** Cached client-credentials token; one exchange in flight at a time. */
  private accessToken(): Promise<string> {
    if (this.token && this.token.expiresAt > Date.now()) return Promise.resolve(this.token.value);
    if (!this.tokenInFlight) {
      this.tokenInFlight = this.fetchToken().finally(() => {
        this.tokenInFlight = undefined;
      });
    }
    return this.tokenInFlight;
  }

  private async fetchToken(): Promise<string> {
    const o = this.opts.oauth!;
    this.stats.tokenRequests++;
    const res = await request(o.tokenUrl, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${o.clientId}:${o.clientSecret}`).toString('base64')}`,
        accept: 'application/json',
      },
      body: 'grant_type=client_credentials',
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      signal: this.abort.signal,
    });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`token endpoint answered HTTP ${res.statusCode}`);
    const json = JSON.parse(text) as { access_token?: unknown; expires_in?: unknown };
    if (typeof json.access_token !== 'string') throw new Error('token endpoint returned no access_token');
    // Required by the exchange Incode documents (shared doc 5.2): a token endpoint that leaves it out is refused, as a
    // broker whose answer Incode could not use would find out only in production.
    if (typeof json.expires_in !== 'number' || !(json.expires_in > 0)) throw new Error('token endpoint returned no expires_in (a number of seconds)');
    const ttl = json.expires_in;
    // Renew a little early so a token never expires in flight.
    this.token = { value: json.access_token, expiresAt: Date.now() + Math.max(1, ttl - 5) * 1000 };
    return json.access_token;
  }

  close(): void {
    this.abort.abort();
  }
}
