// HS256 JWTs shaped like Incode's session/executive tokens, minted with node:crypto because start is the hot path.
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface TokenClaims {
  externalUserId: string;
  role: 'ACCESS' | 'EXECUTIVE' | 'CUSTOMER';
  T: string;
  keyRef: string;
  iat: number;
  exp: number;
}

// Incode's tokens carry a bare {"alg":"HS256"} header; precomputed once.
const HEADER = Buffer.from('{"alg":"HS256"}').toString('base64url');

export class TokenService {
  private readonly secret: Buffer;

  constructor(secret: string, readonly keyRef: string) {
    this.secret = Buffer.from(secret);
  }

  mint(externalUserId: string, role: TokenClaims['role'], ttlSeconds: number, nowSec = Math.floor(Date.now() / 1000)): string {
    const T = role === 'ACCESS' ? 'I' : role === 'EXECUTIVE' ? 'E' : 'C';
    // Hand-built JSON keeps claim order stable and skips JSON.stringify of an object on every start.
    const payload = `{"externalUserId":"${externalUserId}","role":"${role}","T":"${T}","keyRef":"${this.keyRef}","iat":${nowSec},"exp":${nowSec + ttlSeconds}}`;
    const body = `${HEADER}.${Buffer.from(payload).toString('base64url')}`;
    const sig = createHmac('sha256', this.secret).update(body).digest('base64url');
    return `${body}.${sig}`;
  }

  /** Claims of a valid, unexpired token; undefined for anything else (the caller answers 401). */
  verify(token: string | undefined, nowSec = Math.floor(Date.now() / 1000)): TokenClaims | undefined {
    if (!token || token.length > 2048) return undefined;
    const i = token.indexOf('.');
    const j = token.lastIndexOf('.');
    if (i <= 0 || j <= i) return undefined;
    const body = token.slice(0, j);
    const expected = createHmac('sha256', this.secret).update(body).digest();
    let given: Buffer;
    try {
      given = Buffer.from(token.slice(j + 1), 'base64url');
    } catch {
      return undefined;
    }
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    let claims: TokenClaims;
    try {
      claims = JSON.parse(Buffer.from(token.slice(i + 1, j), 'base64url').toString('utf8')) as TokenClaims;
    } catch {
      return undefined;
    }
    if (!claims || typeof claims.externalUserId !== 'string' || typeof claims.exp !== 'number') return undefined;
    if (claims.exp <= nowSec) return undefined;
    return claims;
  }
}

/** Decodes a token's claims without checking the signature (tests and debugging). */
export function decodeClaims(token: string): TokenClaims {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as TokenClaims;
}
