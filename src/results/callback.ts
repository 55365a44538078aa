// Customer notification signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature).
import { createHmac, randomUUID } from 'node:crypto';
import { request } from '../util/undici';

/** "whsec_<base64>" secrets are decoded as Standard Webhooks says; any other string is used as bytes. */
export function secretBytes(secret: string): Buffer {
  return secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret, 'utf8');
}

export function signStandardWebhook(secret: string, msgId: string, timestampSeconds: number, body: string): string {
  const mac = createHmac('sha256', secretBytes(secret)).update(`${msgId}.${timestampSeconds}.${body}`).digest('base64');
  return `v1,${mac}`;
}

/**
 * The customer's event of results that failed for good (EXPIRED, a results fetch dead-lettered, polling that gave up, a
 * server-side onboarding abandoned): queued by setResultsStatus in the write that fails them, or nothing without
 * CALLBACK_URL. `fetchedAt` is the failure's time: the sender speaks only for the session's latest failure by it.
 */
export function resultsFailedEvent(callback: { url?: string }, interviewId: string, code: string, now: number) {
  if (!callback.url) return undefined;
  return { kind: 'callback', subject: interviewId, payload: { event: 'results_failed', resultsStatus: 'failed', code, fetchedAt: now }, runAt: now };
}

/**
 * One delivery attempt of an event. `secrets`: every secret of CALLBACK_SECRET, each signing it (Standard Webhooks'
 * space-separated signatures), so a receiver holding either the new or the old one during a rotation verifies it.
 * The payload's `timestamp` is when the event happened, the same on every attempt of one webhook-id; the
 * `webhook-timestamp` header is the attempt's, as receivers check it against replays.
 */
export async function sendCallback(
  url: string,
  secrets: readonly string[],
  event: { id: string; type: string; occurredAt: number; data: Record<string, unknown> },
  timeoutMs = 10_000,
  signal?: AbortSignal,
): Promise<{ delivered: boolean; code: string }> {
  const ts = Math.floor(Date.now() / 1000);
  const msgId = `msg_${event.id.replace(/[^\w-]/g, '_')}`;
  const body = JSON.stringify({ type: event.type, timestamp: new Date(event.occurredAt).toISOString(), data: event.data });
  const signatures = secrets.map((s) => signStandardWebhook(s, msgId, ts, body));
  // The whole attempt within timeoutMs: undici's own timeouts bound each wait for a byte, so a receiver trickling its
  // answer would hold a worker slot for the job's whole lease. By hand rather than AbortSignal.any: the caller's signal
  // (a job's, a shutdown's) gets one listener, removed when the attempt ends, never one left behind per attempt.
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), timeoutMs);
  const onAbort = () => stop.abort();
  if (signal?.aborted) stop.abort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const res = await request(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'webhook-id': msgId,
        'webhook-timestamp': String(ts),
        'webhook-signature': signatures.join(' '),
        'x-request-id': randomUUID(),
      },
      body,
      // The job's lease deadline and shutdown: a slow receiver must not hold either past its time.
      signal: stop.signal,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    await res.body.dump();
    return res.statusCode >= 200 && res.statusCode < 300 ? { delivered: true, code: 'OK' } : { delivered: false, code: `CALLBACK_HTTP_${res.statusCode}` };
  } catch {
    return { delivered: false, code: 'CALLBACK_UNREACHABLE' };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}
