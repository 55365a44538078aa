// AES-256-GCM envelope for PII at rest, with key ids for rotation and associated data binding each ciphertext to its row and column.
import { createCipheriv, createDecipheriv, hash, timingSafeEqual } from 'node:crypto';
import { randomBytesPooled } from '../util/random-pool';

export interface CipherKey {
  id: string;
  key: Buffer;
}

/** Thrown on any decryption problem; the message never carries plaintext or key material. */
export class CipherError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CipherError';
  }
}

const VERSION = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KID_RE = /^[A-Za-z0-9_-]{1,64}$/;

export class Cipher {
  private readonly keys: Map<string, Buffer>;
  /**
   * Id of the key that encrypts. It is part of every ciphertext, which is what a rotation looks at; the results table's
   * key_id column repeats it for operators and queries, and is kept right, but nothing reads it to decide.
   */
  readonly primaryKeyId: string;
  /** What every ciphertext under the first key starts with (a key rotation looks for values that do not). */
  readonly primaryPrefix: string;

  /** The first key encrypts; every key decrypts (rotation: put the new key first, keep the old ones until re-encrypted). */
  constructor(keys: CipherKey[]) {
    if (!Array.isArray(keys) || keys.length === 0) throw new CipherError('at least one key is required');
    this.keys = new Map();
    for (const k of keys) {
      if (!KID_RE.test(k.id)) throw new CipherError('key id must match [A-Za-z0-9_-]{1,64}');
      if (!Buffer.isBuffer(k.key) || k.key.length !== 32) throw new CipherError(`key ${k.id} must be 32 bytes`);
      if (this.keys.has(k.id)) throw new CipherError(`duplicate key id ${k.id}`);
      // Copy so that a caller zeroing or reusing its buffer cannot change our key.
      this.keys.set(k.id, Buffer.from(k.key));
    }
    this.primaryKeyId = keys[0].id;
    this.primaryPrefix = `${VERSION}.${this.primaryKeyId}.`;
  }

  /** `aad` names where the ciphertext lives (e.g. `results.ocr:<interviewId>`); the same value is needed to decrypt. */
  encrypt(plain: string, aad = ''): string {
    const kid = this.primaryKeyId;
    const iv = randomBytesPooled(IV_BYTES);
    const c = createCipheriv('aes-256-gcm', this.keys.get(kid)!, iv, { authTagLength: TAG_BYTES });
    c.setAAD(aadBytes(kid, aad));
    const ct = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
    const tag = c.getAuthTag();
    return [VERSION, kid, iv.toString('base64url'), tag.toString('base64url'), ct.toString('base64url')].join('.');
  }

  decrypt(blob: string, aad = ''): string {
    if (typeof blob !== 'string') throw new CipherError('ciphertext must be a string');
    const parts = blob.split('.');
    if (parts.length !== 5 || parts[0] !== VERSION) throw new CipherError('malformed ciphertext');
    const [, kid, ivB64, tagB64, ctB64] = parts;
    const key = this.keys.get(kid);
    if (!key) throw new CipherError(`unknown key id ${KID_RE.test(kid) ? kid : '(invalid)'}`);
    const iv = Buffer.from(ivB64, 'base64url');
    const tag = Buffer.from(tagB64, 'base64url');
    if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) throw new CipherError('malformed ciphertext');
    try {
      const d = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
      d.setAAD(aadBytes(kid, aad));
      d.setAuthTag(tag);
      return Buffer.concat([d.update(Buffer.from(ctB64, 'base64url')), d.final()]).toString('utf8');
    } catch {
      // The underlying error is dropped on purpose: only "it failed" is safe to report.
      throw new CipherError('decryption failed (wrong key, wrong context or tampered data)');
    }
  }

  encryptJson(v: unknown, aad = ''): string {
    return this.encrypt(JSON.stringify(v === undefined ? null : v), aad);
  }

  decryptJson<T>(s: string, aad = ''): T {
    const text = this.decrypt(s, aad);
    try {
      return JSON.parse(text) as T;
    } catch {
      // JSON.parse quotes the offending text in its message, which here is plaintext.
      throw new CipherError('decrypted value is not valid JSON');
    }
  }

  /** Key id a ciphertext was written under, or null when it is not one of ours. */
  static keyIdOf(blob: string): string | null {
    const parts = typeof blob === 'string' ? blob.split('.') : [];
    return parts.length === 5 && parts[0] === VERSION ? parts[1] : null;
  }
}

// Version and key id go into the AAD too, so neither can be swapped in the envelope.
function aadBytes(kid: string, aad: string): Buffer {
  return Buffer.from(`${VERSION}|${kid}|${aad}`, 'utf8');
}

/** Constant-time equality of a stored digest and a computed one (digests have a fixed, public length). */
export function hashesEqual(stored: string | null | undefined, given: string): boolean {
  if (typeof stored !== 'string' || stored.length !== given.length) return false;
  return timingSafeEqual(Buffer.from(stored, 'latin1'), Buffer.from(given, 'latin1'));
}

export function sha256Hex(s: string): string {
  // One-shot crypto.hash (Node >= 20.12): a quarter of createHash's cost; several run on every new session.
  return hash('sha256', s, 'hex');
}
