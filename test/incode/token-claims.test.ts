// The interviewId hint read from a session token: the emulator's tokens (Incode's shape) name their session; anything else gives null.
import { interviewIdOfToken } from '../../src/incode/token-claims';
import { TokenService } from '../../src/emulator/tokens';

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

describe('interviewIdOfToken', () => {
  it('reads externalUserId from a session token minted like Incode does', () => {
    const tokens = new TokenService('emulator-secret-0123456789', 'a1b2c3d4e5f6a7b8c9d0e1f2');
    expect(interviewIdOfToken(tokens.mint('6650d2f0a1b2c3d4e5f60718', 'ACCESS', 60))).toBe('6650d2f0a1b2c3d4e5f60718');
  });

  it.each([
    ['no dots', 'opaque-token'],
    ['one dot', 'a.b'],
    ['payload not base64 JSON', 'h.%%%.s'],
    ['payload JSON but not an object', `h.${b64('"x"')}.s`],
    ['payload null', `h.${b64('null')}.s`],
    ['claim missing', `h.${b64({ sub: 'x' })}.s`],
    ['claim not a string', `h.${b64({ externalUserId: 42 })}.s`],
    ['claim with odd characters', `h.${b64({ externalUserId: '../etc' })}.s`],
    ['claim empty', `h.${b64({ externalUserId: '' })}.s`],
    ['payload too long', `h.${b64({ externalUserId: 'abc', pad: 'x'.repeat(5000) })}.s`],
  ])('null for %s', (_name, token) => {
    expect(interviewIdOfToken(token)).toBeNull();
  });
});
