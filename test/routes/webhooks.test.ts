// The webhook token endpoint's stateless tokens: valid for at least the expires_in they are issued with.
import { WEBHOOK_TOKEN_GRACE_SECONDS, WebhookTokens } from '../../src/routes/webhooks';

describe('WebhookTokens', () => {
  it('holds a token for its whole expires_in, whatever the millisecond it was issued at, plus a short grace', () => {
    const tokens = new WebhookTokens('webhook-client-secret', 60);
    for (const issuedAt of [1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_999]) {
      const { token, expiresIn } = tokens.issue(issuedAt);
      expect(expiresIn).toBe(60);
      // The last millisecond of its advertised life, and the grace after it.
      expect(tokens.verify(token, issuedAt + expiresIn * 1000 - 1)).toBe(true);
      expect(tokens.verify(token, issuedAt + expiresIn * 1000 + WEBHOOK_TOKEN_GRACE_SECONDS * 1000 - 1000)).toBe(true);
      expect(tokens.verify(token, issuedAt + expiresIn * 1000 + WEBHOOK_TOKEN_GRACE_SECONDS * 1000 + 1000)).toBe(false);
    }
  });

  it('refuses a token signed with another secret, or altered', () => {
    const { token } = new WebhookTokens('webhook-client-secret', 60).issue();
    expect(new WebhookTokens('another-client-secret', 60).verify(token)).toBe(false);
    const [v, exp, nonce, mac] = token.split('.');
    expect(new WebhookTokens('webhook-client-secret', 60).verify([v, String(Number(exp) + 3600), nonce, mac].join('.'))).toBe(false);
  });
});
