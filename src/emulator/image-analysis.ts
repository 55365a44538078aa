// Decodes uploaded JPEG/PNG and derives Incode-like capture metrics (sharpness, glare, brightness, side) from pixels.
import { SOF_MARKERS } from '../util/jpeg';
import * as jpeg from 'jpeg-js';
import { PNG } from 'pngjs';

export interface DecodedImage {
  width: number;
  height: number;
  /** RGB or RGBA bytes, row-major. */
  data: Uint8Array;
  channels: 3 | 4;
}

export type DocumentSide = 'front' | 'back' | 'unknown';

export interface ImageMetrics {
  width: number;
  height: number;
  /** 0-100, higher = sharper. */
  sharpness: number;
  /** 0-100, higher = LESS glare (Incode's polarity). */
  glare: number;
  /** Mean luma 0-255. */
  brightness: number;
  /** Share of blown-out pixels, 0-1. */
  blownOut: number;
  /** Which synthetic card layout the border colour matches; real photos are 'unknown'. */
  side: DocumentSide;
}

export class ImageDecodeError extends Error {
  constructor(
    message: string,
    readonly tooLarge = false,
  ) {
    super(message);
  }
}

/** Thresholds the integration guide applies; exported so samples and tests agree with the analysis. */
export const THRESHOLDS = { sharpness: 10, glare: 10, horizontalResolution: 155, brightness: 50 } as const;

// Incode takes requests up to 10 MB and has no documented pixel limit; this one is the emulator's own, since it decodes
// on its event loop (a sandbox's emulator is the broker's process). 16 MP holds a phone's 12 MP photo; above it
// Incode's "Image size unsupported" (3008) answers.
export const MAX_MEGAPIXELS = 16;

// jpeg-js allocates every 8x8 block of every component before it reads any scan data, as an Int32Array(64) of its own:
// about 600 bytes each once its objects are counted (its own maxMemoryUsageInMB counts 256), so a 618-byte file that
// declares 40 MP made it allocate 1.2 GB for 3 s. The frame header is read first and the blocks counted.
const JPEG_BLOCK_BYTES = 600;
const MAX_JPEG_BLOCK_BYTES = 384 * 1024 * 1024;
// jpeg-js's own limit, by its own accounting (256 bytes a block, plus its output): what the budget above lets through
// (about 170 MB of blocks by that count, and a 16 MP image's output) passes it, and it still holds should the two
// readings of a file ever differ.
const JPEG_DECODER_MAX_MB = 320;

// A camera's JPEG has one scan, a progressive one about ten (an embedded thumbnail adds its own). jpeg-js decodes
// every scan over the whole image synchronously, so thousands of tiny scans would hold the event loop for minutes.
const MAX_JPEG_SCANS = 100;
const SOS = Buffer.from([0xff, 0xda]);

/** Start-of-scan markers in a JPEG (entropy-coded data never holds FF DA: a data FF is followed by 00 or a restart). */
function jpegScans(buf: Buffer, limit: number): number {
  let n = 0;
  for (let at = buf.indexOf(SOS, 2); at >= 0 && n <= limit; at = buf.indexOf(SOS, at + 2)) n++;
  return n;
}

export interface JpegFrames {
  /** Frame headers found; jpeg-js decodes one only, but allocates every one's blocks as it meets it. */
  frames: number;
  /** The largest frame's size in pixels, and that frame's width and height. */
  pixels: number;
  width: number;
  height: number;
  /** The 8x8 blocks jpeg-js allocates for all of them (as its prepareComponents counts a frame's). */
  blocks: number;
  /** A frame header jpeg-js would refuse (no components, more than four, a sampling factor of 0 or over 4). */
  invalid: boolean;
}

/** One frame header's size and blocks; components by id, a repeated id replacing the earlier one, as jpeg-js keeps them. */
function frameBlocks(buf: Buffer, f: number): { width: number; height: number; blocks: number; invalid: boolean } | null {
  if (f + 6 > buf.length) return null;
  const height = buf.readUInt16BE(f + 1);
  const width = buf.readUInt16BE(f + 3);
  const count = buf[f + 5];
  if (f + 6 + 3 * count > buf.length) return null;
  const byId = new Map<number, { h: number; v: number }>();
  for (let c = 0; c < count; c++) {
    const hv = buf[f + 6 + 3 * c + 1];
    byId.set(buf[f + 6 + 3 * c], { h: hv >> 4, v: hv & 15 });
  }
  const components = [...byId.values()];
  const invalid = count === 0 || count > 4 || components.some((c) => c.h < 1 || c.h > 4 || c.v < 1 || c.v > 4);
  if (invalid) return { width, height, blocks: 0, invalid };
  const maxH = Math.max(...components.map((c) => c.h));
  const maxV = Math.max(...components.map((c) => c.v));
  const mcusPerLine = Math.ceil(width / 8 / maxH);
  const mcusPerColumn = Math.ceil(height / 8 / maxV);
  return { width, height, blocks: components.reduce((n, c) => n + mcusPerLine * c.h * mcusPerColumn * c.v, 0), invalid };
}

/**
 * Every frame header of a JPEG, read as a decoder walks the file: marker segments by their length, scans by their
 * entropy-coded data up to the next marker (a data 0xFF is followed by 00 or a restart marker), anything else skipped
 * up to the next 0xFF. Nothing is decoded; jpeg-js walks the whole file too, allocating each frame's blocks as it
 * meets it and refusing more than one frame only at the end.
 */
export function jpegFrames(buf: Buffer): JpegFrames {
  const out: JpegFrames = { frames: 0, pixels: 0, width: 0, height: 0, blocks: 0, invalid: false };
  let at = 2;
  while (at + 2 <= buf.length) {
    if (buf[at] !== 0xff) {
      at = buf.indexOf(0xff, at);
      if (at < 0) break;
      continue;
    }
    const marker = buf[at + 1];
    // Fill bytes, and the markers that carry no length (a stuffed 00, TEM, RSTn).
    if (marker === 0xff) {
      at++;
      continue;
    }
    if (marker === 0x00 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      at += 2;
      continue;
    }
    if (marker === 0xd9 || at + 4 > buf.length) break;
    const length = buf.readUInt16BE(at + 2);
    if (SOF_MARKERS.has(marker)) {
      const f = frameBlocks(buf, at + 4);
      if (!f) break;
      out.frames++;
      out.blocks += f.blocks;
      out.invalid ||= f.invalid;
      if (f.width * f.height >= out.pixels) Object.assign(out, { pixels: f.width * f.height, width: f.width, height: f.height });
    }
    at += 2 + Math.max(2, length);
    if (marker === 0xda) {
      // The scan's data, up to the next marker that is not a stuffed byte or a restart.
      for (;;) {
        at = buf.indexOf(0xff, at);
        if (at < 0 || at + 1 >= buf.length) return out;
        const next = buf[at + 1];
        if (next !== 0x00 && next !== 0xff && !(next >= 0xd0 && next <= 0xd7)) break;
        at += next === 0xff ? 1 : 2;
      }
    }
  }
  return out;
}

/**
 * A PNG's header (IHDR, always the first chunk), read before anything is inflated: a small file can declare an image of
 * gigabytes, which pngjs would allocate before any size check after decoding could refuse it. `bytesPerPixel` is the
 * inflated data's (16-bit samples take two bytes each).
 */
function pngHeader(buf: Buffer): { width: number; height: number; bytesPerPixel: number } | null {
  if (buf.length < 29 || buf.toString('latin1', 12, 16) !== 'IHDR') return null;
  const bitDepth = buf[24];
  const channels = ({ 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 } as Record<number, number>)[buf[25]] ?? 4;
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20), bytesPerPixel: Math.max(1, (channels * bitDepth) / 8) };
}

/** The most inflated pixel data a PNG may have: a 16 MP image of 8-bit RGBA (pngjs holds it and its RGBA copy). */
const MAX_PNG_INFLATED_BYTES = MAX_MEGAPIXELS * 1e6 * 4;

/**
 * The pixels of a JPEG or PNG. `admit` is told the pixels its header declares once every check of the header passed,
 * before anything is decoded, and throws to stop it there (a decode budget): an image refused for its size costs it
 * nothing, and the file is walked once.
 */
export function decodeImage(buf: Buffer, admit?: (pixels: number) => void): DecodedImage {
  if (buf.length >= 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff) {
    if (jpegScans(buf, MAX_JPEG_SCANS) > MAX_JPEG_SCANS) throw new ImageDecodeError(`JPEG has more than ${MAX_JPEG_SCANS} scans`);
    const frames = jpegFrames(buf);
    if (frames.pixels > MAX_MEGAPIXELS * 1e6 || frames.blocks * JPEG_BLOCK_BYTES > MAX_JPEG_BLOCK_BYTES) throw new ImageDecodeError('JPEG too large', true);
    // What jpeg-js would refuse too, only after allocating: refused before.
    if (frames.frames !== 1 || frames.invalid || !frames.pixels) throw new ImageDecodeError(`JPEG could not be decoded: ${frames.frames === 0 ? 'no frame header' : frames.frames > 1 ? 'more than one frame' : 'invalid frame header'}`);
    admit?.(frames.pixels);
    try {
      const img = jpeg.decode(buf, { useTArray: true, formatAsRGBA: false, maxResolutionInMP: MAX_MEGAPIXELS, maxMemoryUsageInMB: JPEG_DECODER_MAX_MB });
      if (!img.width || !img.height) throw new Error('empty image');
      return { width: img.width, height: img.height, data: img.data, channels: 3 };
    } catch (e) {
      const msg = (e as Error).message || 'invalid JPEG';
      throw new ImageDecodeError(`JPEG could not be decoded: ${msg}`, /maxResolutionInMP|memory/i.test(msg));
    }
  }
  if (buf.length >= 8 && buf.readUInt32BE(0) === 0x89504e47) {
    const declared = pngHeader(buf);
    if (!declared) throw new ImageDecodeError('PNG could not be decoded: no IHDR header');
    const pixels = declared.width * declared.height;
    if (pixels > MAX_MEGAPIXELS * 1e6 || pixels * declared.bytesPerPixel > MAX_PNG_INFLATED_BYTES) throw new ImageDecodeError('PNG too large', true);
    admit?.(pixels);
    try {
      const png = PNG.sync.read(buf);
      return { width: png.width, height: png.height, data: png.data, channels: 4 };
    } catch (e) {
      throw new ImageDecodeError(`PNG could not be decoded: ${(e as Error).message}`);
    }
  }
  throw new ImageDecodeError('Unsupported image format (JPEG or PNG expected)');
}

/**
 * Base64 to bytes; undefined if it is not base64 at all. A data: URL is not base64: Incode documents the body as
 * "base64 without data: prefix" (incode-api.md), so a client that forgets to strip it is refused here as it would be.
 */
export function base64ToBuffer(s: string): Buffer | undefined {
  const b64 = s.trim();
  if (!b64 || !/^[A-Za-z0-9+/=_\-\s]+$/.test(b64.slice(0, 256))) return undefined;
  const buf = Buffer.from(b64, 'base64');
  return buf.length ? buf : undefined;
}

// Analysis runs on a box-downscaled copy near this width: cheap, and it makes the
// sharpness score roughly independent of the upload's resolution.
const ANALYSIS_WIDTH = 400;

// Synthetic card background colours (sample-images.ts paints these) used to tell front from back.
export const FRONT_BACKGROUND: readonly [number, number, number] = [172, 206, 236];
export const BACK_BACKGROUND: readonly [number, number, number] = [236, 222, 186];

// |Laplacian| at the 99.8th percentile that maps to sharpness 100; crisp edges of contrast ≥ ~80 reach it.
const LAPLACIAN_FULL_SCALE = 80;
const SHARP_PERCENTILE = 0.998;
// Percentage points of blown-out area that cost one point of glare score: ≥ 30% blown out scores < 10.
const GLARE_WEIGHT = 3;

export function analyzeImage(img: DecodedImage): ImageMetrics {
  const { width, height, data, channels } = img;
  const f = Math.max(1, Math.floor(Math.max(width, height) / ANALYSIS_WIDTH));
  const w = Math.floor(width / f);
  const h = Math.floor(height / f);
  const n = w * h;
  const gray = new Uint8Array(n);
  const r = new Uint8Array(n);
  const g = new Uint8Array(n);
  const b = new Uint8Array(n);
  const area = f * f;
  let lumaSum = 0;
  let blown = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let sr = 0;
      let sg = 0;
      let sb = 0;
      for (let dy = 0; dy < f; dy++) {
        let p = ((y * f + dy) * width + x * f) * channels;
        for (let dx = 0; dx < f; dx++, p += channels) {
          sr += data[p];
          sg += data[p + 1];
          sb += data[p + 2];
        }
      }
      const i = y * w + x;
      const rr = sr / area;
      const gg = sg / area;
      const bb = sb / area;
      r[i] = rr;
      g[i] = gg;
      b[i] = bb;
      const l = 0.299 * rr + 0.587 * gg + 0.114 * bb;
      gray[i] = l;
      lumaSum += l;
      if (rr >= 248 && gg >= 248 && bb >= 248) blown++;
    }
  }

  // Histogram of |4-neighbour Laplacian|: a high percentile says "crisp edges exist somewhere",
  // which (unlike the variance) does not punish images that are mostly flat, like a webcam test pattern.
  const hist = new Uint32Array(1021);
  let count = 0;
  for (let y = 1; y < h - 1; y++) {
    for (let x = 1; x < w - 1; x++) {
      const i = y * w + x;
      const lap = 4 * gray[i] - gray[i - 1] - gray[i + 1] - gray[i - w] - gray[i + w];
      hist[lap < 0 ? -lap : lap]++;
      count++;
    }
  }
  let p = 0;
  if (count > 0) {
    const target = Math.floor(count * SHARP_PERCENTILE);
    let acc = 0;
    for (let v = 0; v < hist.length; v++) {
      acc += hist[v];
      if (acc > target) {
        p = v;
        break;
      }
    }
  }
  const sharpness = Math.min(100, Math.round((p * 100) / LAPLACIAN_FULL_SCALE));
  const blownOut = n ? blown / n : 0;
  const glare = Math.max(0, Math.min(100, Math.round(100 - blownOut * 100 * GLARE_WEIGHT)));
  return {
    width,
    height,
    sharpness,
    glare,
    brightness: n ? Math.round(lumaSum / n) : 0,
    blownOut,
    side: detectSide(r, g, b, w, h),
  };
}

function detectSide(r: Uint8Array, g: Uint8Array, b: Uint8Array, w: number, h: number): DocumentSide {
  // Four small patches just inside the corners, where the synthetic cards have plain background.
  const pw = Math.max(1, Math.round(w * 0.04));
  const ph = Math.max(1, Math.round(h * 0.05));
  const ix = Math.round(w * 0.025);
  const iy = Math.round(h * 0.03);
  const origins: Array<[number, number]> = [
    [ix, iy],
    [w - ix - pw, iy],
    [ix, h - iy - ph],
    [w - ix - pw, h - iy - ph],
  ];
  let front = 0;
  let back = 0;
  for (const [ox, oy] of origins) {
    let sr = 0;
    let sg = 0;
    let sb = 0;
    let k = 0;
    for (let y = Math.max(0, oy); y < Math.min(h, oy + ph); y++) {
      for (let x = Math.max(0, ox); x < Math.min(w, ox + pw); x++) {
        const i = y * w + x;
        sr += r[i];
        sg += g[i];
        sb += b[i];
        k++;
      }
    }
    if (!k) continue;
    const c = [sr / k, sg / k, sb / k];
    if (near(c, FRONT_BACKGROUND)) front++;
    else if (near(c, BACK_BACKGROUND)) back++;
  }
  if (front >= 3) return 'front';
  if (back >= 3) return 'back';
  return 'unknown';
}

function near(c: number[], ref: readonly number[]): boolean {
  return Math.abs(c[0] - ref[0]) <= 14 && Math.abs(c[1] - ref[1]) <= 14 && Math.abs(c[2] - ref[2]) <= 14;
}
