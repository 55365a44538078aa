// Cipher envelope: format, AAD binding, tamper detection, key rotation, and errors that never leak plaintext.
import { Cipher, CipherError, sha256Hex } from '../../src/store/crypto';

const k1 = { id: 'k1', key: Buffer.alloc(32, 1) };
const k2 = { id: 'k2', key: Buffer.alloc(32, 2) };
const SECRET = 'Zephyrine Quillfeather-Obradovic';

function failure(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a failure');
}

describe('Cipher', () => {
  const c = new Cipher([k1]);

  it('round-trips with the v1.<kid>.<iv>.<tag>.<ct> format and a fresh IV each time', () => {
    const a = c.encrypt(SECRET, 'results.ocr:i1');
    const b = c.encrypt(SECRET, 'results.ocr:i1');
    expect(a).toMatch(/^v1\.k1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]+$/);
    expect(a).not.toBe(b);
    expect(a).not.toContain(SECRET);
    expect(c.decrypt(a, 'results.ocr:i1')).toBe(SECRET);
    expect(c.decrypt(c.encrypt(''), '')).toBe('');
    expect(c.decrypt(c.encrypt('ünïcødé ✓'))).toBe('ünïcødé ✓');
    expect(Cipher.keyIdOf(a)).toBe('k1');
    expect(Cipher.keyIdOf('garbage')).toBeNull();
    expect(c.primaryKeyId).toBe('k1');
  });

  it('round-trips JSON', () => {
    const v = { fullName: SECRET, n: 1, list: [true, null] };
    expect(c.decryptJson(c.encryptJson(v, 'x'), 'x')).toEqual(v);
    expect(c.decryptJson(c.encryptJson(undefined))).toBeNull();
    const e = failure(() => c.decryptJson(c.encrypt(SECRET, 'x'), 'x'));
    expect(e).toBeInstanceOf(CipherError);
    expect(e.message).not.toContain('Zephyrine');
  });

  it('fails with the wrong associated data (ciphertext moved to another row)', () => {
    const blob = c.encrypt(SECRET, 'results.ocr:i1');
    const e = failure(() => c.decrypt(blob, 'results.ocr:i2'));
    expect(e).toBeInstanceOf(CipherError);
    expect(e.message).not.toContain(SECRET);
    expect(() => c.decrypt(blob)).toThrow(CipherError);
  });

  it('detects tampering in iv, tag, ciphertext and key id', () => {
    const blob = c.encrypt(SECRET, 'a');
    const parts = blob.split('.');
    for (const i of [2, 3, 4]) {
      const p = [...parts];
      const buf = Buffer.from(p[i], 'base64url');
      buf[buf.length - 1] ^= 0x80;
      p[i] = buf.toString('base64url');
      const e = failure(() => c.decrypt(p.join('.'), 'a'));
      expect(e).toBeInstanceOf(CipherError);
      expect(e.message).not.toContain(SECRET);
    }
    // Same key bytes under another id: the id is bound into the AAD too.
    const alias = new Cipher([k1, { id: 'alias', key: k1.key }]);
    expect(() => alias.decrypt(['v1', 'alias', ...parts.slice(2)].join('.'), 'a')).toThrow(/decryption failed/);
  });

  it('rejects malformed envelopes and unknown key ids', () => {
    expect(() => c.decrypt('nope', '')).toThrow(/malformed/);
    expect(() => c.decrypt('v2.k1.a.b.c', '')).toThrow(/malformed/);
    expect(() => c.decrypt('v1.k1.AAAA.BBBB.CCCC', '')).toThrow(/malformed/);
    const other = new Cipher([k2]).encrypt(SECRET);
    expect(() => c.decrypt(other)).toThrow(/unknown key id k2/);
  });

  it('rotates: the first key encrypts, every key decrypts', () => {
    const old = new Cipher([k1]).encrypt(SECRET, 'x');
    const rotated = new Cipher([k2, k1]);
    expect(rotated.decrypt(old, 'x')).toBe(SECRET);
    expect(Cipher.keyIdOf(rotated.encrypt(SECRET))).toBe('k2');
  });

  it('validates keys', () => {
    expect(() => new Cipher([])).toThrow(CipherError);
    expect(() => new Cipher([{ id: 'k', key: Buffer.alloc(16) }])).toThrow(/32 bytes/);
    expect(() => new Cipher([{ id: 'a.b', key: Buffer.alloc(32) }])).toThrow(/key id/);
    expect(() => new Cipher([k1, k1])).toThrow(/duplicate/);
  });

  it('copies key material so later changes to the caller buffer do not matter', () => {
    const key = Buffer.alloc(32, 7);
    const cc = new Cipher([{ id: 'k', key }]);
    const blob = cc.encrypt(SECRET);
    key.fill(0);
    expect(cc.decrypt(blob)).toBe(SECRET);
  });
});

describe('helpers', () => {
  it('sha256Hex', () => {
    expect(sha256Hex('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

});
