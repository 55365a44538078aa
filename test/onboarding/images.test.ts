// The server-side flow's image checks: base64 of a JPEG or PNG whose own header says it is one, before any session.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as img from '../../src/emulator/sample-images';
import { parseBase64Image } from '../../src/onboarding/images';
import { withCommentSegments } from '../helpers/flow';

const b64 = (b: Buffer) => b.toString('base64');
const SIG_PNG = Buffer.from('89504e470d0a1a0a', 'hex');

/** A PNG's signature and IHDR chunk (width × height), padded to a photo's minimum size; CRCs are not checked here. */
function pngHead(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(25);
  ihdr.writeUInt32BE(13, 0);
  ihdr.write('IHDR', 4, 'latin1');
  ihdr.writeUInt32BE(width, 8);
  ihdr.writeUInt32BE(height, 12);
  return Buffer.concat([SIG_PNG, ihdr, Buffer.alloc(200)]);
}

/** `n` bytes that look random and are the same on every run: SHA-256 of a counter, chained. */
function hashChain(n: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; parts.length * 32 < n; i++) parts.push(createHash('sha256').update(`chain-${i}`).digest());
  return Buffer.concat(parts).subarray(0, n);
}

describe('parseBase64Image', () => {
  it.each([
    ['the emulator samples', [img.idFront(), img.idBack(), img.selfie(), img.smallIdFront()]],
    ['the samples folder', ['id-front.jpg', 'id-back.jpg', 'selfie.jpg'].map((f) => readFileSync(join(__dirname, '../../samples', f)))],
    ['a JPEG whose frame header comes after 6 MB of other segments', [withCommentSegments(img.idFront(), 6 * 1024 * 1024)]],
    ['a PNG', [pngHead(640, 480)]],
  ])('takes %s', (_what, images) => {
    for (const image of images) expect(parseBase64Image(b64(image))).toEqual({ base64: b64(image) });
    // As a data URL too, without its prefix.
    expect(parseBase64Image(`data:image/jpeg;base64,${b64(images[0])}`)).toEqual({ base64: b64(images[0]) });
  });

  it.each([
    // Fixed bytes (a hash chain), not random ones: about one random blob in 8,000 happens to walk to a frame header.
    ['random bytes behind a JPEG start', Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), hashChain(50_000)])],
    ['a JPEG cut before its frame header', img.idFront().subarray(0, 120)],
    ['a JPEG whose scan comes before any frame header', Buffer.concat([Buffer.from('ffd8ffda000c', 'hex'), Buffer.alloc(300)])],
    ['a PNG signature and garbage', Buffer.concat([SIG_PNG, hashChain(5000)])],
    ['a PNG of width 0', pngHead(0, 480)],
  ])('refuses %s as no readable image', (_what, image) => {
    expect(parseBase64Image(b64(image))).toEqual({ error: expect.stringMatching(/^is not a readable (JPEG|PNG)/) });
  });
});
