// Cryptographically random bytes served from a pooled buffer: one randomFillSync per 8 KiB, not per call.
import { randomFillSync } from 'node:crypto';

const POOL_SIZE = 8192;
let pool = Buffer.allocUnsafe(POOL_SIZE);
let offset = POOL_SIZE;

/** Same guarantees as crypto.randomBytes(n) (CSPRNG output, each byte handed out once), far cheaper for small n. */
export function randomBytesPooled(n: number): Buffer {
  if (n > POOL_SIZE / 4) return randomFillSync(Buffer.allocUnsafe(n));
  if (offset + n > POOL_SIZE) {
    // A fresh buffer each refill: slices handed out earlier keep their bytes.
    pool = randomFillSync(Buffer.allocUnsafe(POOL_SIZE));
    offset = 0;
  }
  const out = Buffer.from(pool.subarray(offset, offset + n));
  offset += n;
  return out;
}
