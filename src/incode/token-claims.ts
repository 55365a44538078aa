// What an Incode token says about itself, used only as a hint (a lookup, a refresh time, which token a job tries first): it stays opaque for every decision.
// Incode's session tokens are JWTs whose `externalUserId` claim is the interviewId (shared doc 2.3, inferred from
// public samples). The signature cannot be checked here, so a caller must still match the whole token (its hash).

const MAX_PAYLOAD_CHARS = 4096;
const ID_RE = /^[A-Za-z0-9_-]{1,128}$/;

/** What an Incode interviewId can look like: anything else named by a token is forged and never reaches the store. */
export function isInterviewId(id: string): boolean {
  return ID_RE.test(id);
}

/** The claims of a JWT-shaped token, unverified (null when it is not one): for hints, never for decisions. */
export function jwtClaims(token: string): Record<string, unknown> | null {
  const a = token.indexOf('.');
  const b = a < 0 ? -1 : token.indexOf('.', a + 1);
  if (b < 0 || b - a - 1 > MAX_PAYLOAD_CHARS) return null;
  try {
    const claims: unknown = JSON.parse(Buffer.from(token.slice(a + 1, b), 'base64url').toString('utf8'));
    return claims !== null && typeof claims === 'object' && !Array.isArray(claims) ? (claims as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** The interviewId a session token names, or null when it is not a JWT with a plausible `externalUserId`. */
export function interviewIdOfToken(token: string): string | null {
  const id = jwtClaims(token)?.externalUserId;
  return typeof id === 'string' && isInterviewId(id) ? id : null;
}
