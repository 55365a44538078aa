// Session/executive JWT minting and verification.
import { decodeClaims, TokenService } from '../../src/emulator/tokens';

describe('TokenService', () => {
  const svc = new TokenService('secret', 'a'.repeat(24));

  it('mints HS256 tokens with Incode claims that verify', () => {
    const t = svc.mint('0123456789abcdef01234567', 'ACCESS', 100, 1000);
    expect(decodeClaims(t)).toEqual({ externalUserId: '0123456789abcdef01234567', role: 'ACCESS', T: 'I', keyRef: 'a'.repeat(24), iat: 1000, exp: 1100 });
    expect(svc.verify(t, 1050)?.externalUserId).toBe('0123456789abcdef01234567');
  });

  it('rejects expired, tampered, foreign and malformed tokens', () => {
    const t = svc.mint('x'.repeat(24), 'ACCESS', 100, 1000);
    expect(svc.verify(t, 1100)).toBeUndefined();
    const [h, p, s] = t.split('.');
    const forged = Buffer.from(JSON.stringify({ ...decodeClaims(t), externalUserId: 'y'.repeat(24) })).toString('base64url');
    expect(svc.verify(`${h}.${forged}.${s}`, 1050)).toBeUndefined();
    expect(svc.verify(`${h}.${p}.${s}x`, 1050)).toBeUndefined();
    expect(new TokenService('other', 'k').verify(t, 1050)).toBeUndefined();
    for (const bad of [undefined, '', 'abc', 'a.b', '..', 'a'.repeat(5000)]) expect(svc.verify(bad, 1050)).toBeUndefined();
  });

  it('marks executive tokens', () => {
    expect(decodeClaims(svc.mint('e', 'EXECUTIVE', 10))).toMatchObject({ role: 'EXECUTIVE', T: 'E' });
  });
});
