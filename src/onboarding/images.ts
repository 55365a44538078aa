// Image input checks shared by POST /onboardings and the CLI: base64 that decodes to a JPEG or PNG.
import { AppError } from '../errors';
import { SOF_MARKERS } from '../util/jpeg';

type ImageKind = 'jpeg' | 'png';

/** Format from the first bytes; Incode takes JPEG and PNG, anything else fails there with a vaguer error. */
function imageKind(head: Uint8Array): ImageKind | null {
  if (head.length >= 3 && head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return 'jpeg';
  if (head.length >= 8 && head[0] === 0x89 && head[1] === 0x50 && head[2] === 0x4e && head[3] === 0x47 && head[4] === 0x0d && head[5] === 0x0a && head[6] === 0x1a && head[7] === 0x0a) return 'png';
  return null;
}

/**
 * The length of s without its padding when s is standard base64 (at most two '=' at the end, and then only where they
 * complete the last group of four), else -1; checked in one linear pass. A regular expression is not safe here: on a
 * photo of several MB a greedy pattern's backtracking stack can overflow (a 500). Unpadded base64 is taken (Node and
 * Java decoders accept it); misplaced padding, a stray "==" appended or a cut tail ending "AA=", is not: Incode's
 * decoder would refuse it only after a billable session was started for it.
 */
function base64DataLength(s: string): number {
  let end = s.length;
  if (end > 0 && s.charCodeAt(end - 1) === 61) end--;
  if (end > 0 && s.charCodeAt(end - 1) === 61) end--;
  if (end === 0 || (end < s.length && s.length % 4 !== 0)) return -1;
  for (let i = 0; i < end; i++) {
    const c = s.charCodeAt(i);
    const ok = (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 43 || c === 47;
    if (!ok) return -1;
  }
  return end;
}

/** `n` bytes at `offset` of the data base64 `b64` (its first `chars` characters, padding excluded), or null past its end. */
function bytesAt(b64: string, chars: number, offset: number, n: number): Buffer | null {
  if (offset < 0 || offset + n > Math.floor((chars * 3) / 4)) return null;
  const first = Math.floor(offset / 3) * 4;
  const bytes = Buffer.from(b64.slice(first, Math.min(chars, Math.ceil((offset + n) / 3) * 4)), 'base64');
  const skip = offset - (first / 4) * 3;
  return bytes.length >= skip + n ? bytes.subarray(skip, skip + n) : null;
}

/** Markers a JPEG may hold between its segments that carry no length: TEM, RST0-7, and SOI. */
const STANDALONE = new Set([0x01, 0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8]);

/**
 * Whether the image's own header says what it is: a JPEG's segments, walked by their lengths (a few bytes decoded per
 * segment), reach a frame header (SOFn) with a width before any scan; a PNG starts with its IHDR chunk and a size.
 * A blob that only starts with an image's magic bytes would otherwise start a billable session that Incode refuses.
 */
function hasImageHeader(kind: ImageKind, b64: string, chars: number): boolean {
  const at = (offset: number, n: number) => bytesAt(b64, chars, offset, n);
  if (kind === 'png') {
    const ihdr = at(8, 16);
    return ihdr !== null && ihdr.readUInt32BE(0) === 13 && ihdr.toString('latin1', 4, 8) === 'IHDR' && ihdr.readUInt32BE(8) > 0 && ihdr.readUInt32BE(12) > 0;
  }
  let pos = 2;
  // Bounded: a real photo's header is a handful of segments (each at most 64 KB); 10 MB of them is about 160.
  for (let hops = 0; hops < 4096; hops++) {
    const m = at(pos, 2);
    if (!m || m[0] !== 0xff) return false;
    const marker = m[1];
    // Fill bytes (FF FF...) before a marker, and markers without a length.
    if (marker === 0xff) pos += 1;
    else if (STANDALONE.has(marker)) pos += 2;
    // A scan or the image's end before any frame header: not a photo.
    else if (marker === 0xda || marker === 0xd9 || marker === 0x00) return false;
    else {
      const len = at(pos + 2, 2)?.readUInt16BE(0);
      if (len === undefined || len < 2) return false;
      if (SOF_MARKERS.has(marker)) {
        const frame = at(pos + 4, 5);
        return frame !== null && len >= 8 && frame.readUInt16BE(3) > 0;
      }
      pos += 2 + len;
    }
  }
  return false;
}

/** Smallest plausible photo: anything shorter is a placeholder, not a capture. */
const MIN_IMAGE_BYTES = 100;

/**
 * Longest base64 image Incode takes: its requests are limited to 10 MB (shared doc 1.4, 4.5), the JSON around the
 * image included. Counted in decimal megabytes, the smaller reading, less room for `{"base64Image":""}`. Refused
 * here, before a (billable) session is started for an upload Incode would answer 413.
 */
const MAX_IMAGE_BASE64_CHARS = 10_000_000 - 64;

/** The largest image file whose base64 fits (4 characters per 3 bytes): what the CLI checks before reading a file. */
export const MAX_IMAGE_BYTES = Math.floor(MAX_IMAGE_BASE64_CHARS / 4) * 3;

export const IMAGE_TOO_LARGE_MESSAGE = `is larger than Incode accepts (10 MB of base64, about 7.5 MB of image): send a smaller or more compressed photo`;

/**
 * Returns the bare base64 (data: prefix removed) or why it is not an image, the rules of the route and the CLI alike.
 * Only the head is decoded: the body is already known to use the base64 alphabet, and decoding several MB just to
 * re-encode them is waste.
 */
export function parseBase64Image(input: string): { base64: string } | { error: string; tooLarge?: true } {
  const comma = input.startsWith('data:') ? input.indexOf(',') : -1;
  const b64 = comma >= 0 ? input.slice(comma + 1) : input;
  if (b64.length > MAX_IMAGE_BASE64_CHARS) return { error: IMAGE_TOO_LARGE_MESSAGE, tooLarge: true };
  const length = base64DataLength(b64);
  if (length < 0) return { error: 'is not base64' };
  // A base64 length of 4n+1 cannot come from any byte string.
  if (length % 4 === 1) return { error: 'is not valid base64 (truncated?)' };
  const kind = imageKind(Buffer.from(b64.slice(0, 12), 'base64'));
  if (!kind) return { error: 'is not a JPEG or PNG image' };
  if (Math.floor((length * 3) / 4) < MIN_IMAGE_BYTES) return { error: `is too small to be a photo (under ${MIN_IMAGE_BYTES} bytes)` };
  if (!hasImageHeader(kind, b64, length)) return { error: `is not a readable ${kind === 'png' ? 'PNG' : 'JPEG'} (no image header with its size)` };
  return { base64: b64 };
}

/** parseBase64Image for a request field: 400 INVALID_IMAGE naming the field. */
export function decodeImage(input: string, field: string): string {
  const r = parseBase64Image(input);
  if ('error' in r) throw new AppError(400, r.tooLarge ? 'IMAGE_TOO_LARGE' : 'INVALID_IMAGE', `${field} ${r.error}`);
  return r.base64;
}
