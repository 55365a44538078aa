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

export async function sendCallback(
  url: string,
  secret: string,
  event: { id: string; type: string; data: Record<string, unknown> },
  timeoutMs = 10_000,
  signal?: AbortSignal,
): Promise<{ delivered: boolean; code: string }> {
  const ts = Math.floor(Date.now() / 1000);
  const msgId = `msg_${event.id.replace(/[^\w-]/g, '_')}`;
  const body = JSON.stringify({ type: event.type, timestamp: new Date(ts * 1000).toISOString(), data: event.data });
  try {
    const res = await request(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'webhook-id': msgId,
        'webhook-timestamp': String(ts),
        'webhook-signature': signStandardWebhook(secret, msgId, ts, body),
        'x-request-id': randomUUID(),
      },
      body,
      // The job's lease deadline and shutdown: a slow receiver must not hold either past its time.
      signal,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    await res.body.dump();
    return res.statusCode >= 200 && res.statusCode < 300 ? { delivered: true, code: 'OK' } : { delivered: false, code: `CALLBACK_HTTP_${res.statusCode}` };
  } catch {
    return { delivered: false, code: 'CALLBACK_UNREACHABLE' };
  }
}
