// What an Incode session token says about itself, used only as a lookup hint: the token stays opaque for every decision.
// Incode's session tokens are JWTs whose `externalUserId` claim is the interviewId (shared doc 2.3, inferred from
// public samples). The signature cannot be checked here, so a caller must still match the whole token (its hash).

const MAX_PAYLOAD_CHARS = 4096;
const ID_RE = /^[A-Za-z0-9_-]{1,128}$/;

/** The interviewId a session token names, or null when it is not a JWT with a plausible `externalUserId`. */
export function interviewIdOfToken(token: string): string | null {
  const a = token.indexOf('.');
  const b = a < 0 ? -1 : token.indexOf('.', a + 1);
  if (b < 0 || b - a - 1 > MAX_PAYLOAD_CHARS) return null;
  try {
    const claims: unknown = JSON.parse(Buffer.from(token.slice(a + 1, b), 'base64url').toString('utf8'));
    const id = (claims as { externalUserId?: unknown } | null)?.externalUserId;
    return typeof id === 'string' && ID_RE.test(id) ? id : null;
  } catch {
    return null;
  }
}
