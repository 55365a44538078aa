// Pixel metrics on the synthetic samples and on a real Chromium fake-camera frame.
import { readFileSync } from 'node:fs';
import { PNG } from 'pngjs';
import * as jpeg from 'jpeg-js';
import { analyzeImage, base64ToBuffer, decodeImage, ImageDecodeError, jpegFrames, THRESHOLDS } from '../../src/emulator/image-analysis';
import * as samples from '../../src/emulator/sample-images';

const metrics = (b: Buffer) => analyzeImage(decodeImage(b));

describe('image analysis', () => {
  it('scores the good front and back high and tells their sides apart', () => {
    const f = metrics(samples.idFront());
    expect(f).toMatchObject({ width: 1200, height: 760, side: 'front' });
    expect(f.sharpness).toBeGreaterThanOrEqual(80);
    expect(f.glare).toBeGreaterThanOrEqual(90);
    const b = metrics(samples.idBack());
    expect(b.side).toBe('back');
    expect(b.sharpness).toBeGreaterThanOrEqual(80);
    expect(b.glare).toBeGreaterThanOrEqual(90);
  });

  it('fails the blurry, glare and small fronts on exactly their own check', () => {
    const blurry = metrics(samples.blurryIdFront());
    expect(blurry.sharpness).toBeLessThan(THRESHOLDS.sharpness);
    expect(blurry.glare).toBeGreaterThanOrEqual(THRESHOLDS.glare);
    const glare = metrics(samples.glareIdFront());
    expect(glare.glare).toBeLessThan(THRESHOLDS.glare);
    expect(glare.sharpness).toBeGreaterThanOrEqual(THRESHOLDS.sharpness);
    const small = metrics(samples.smallIdFront());
    expect(small.width).toBeLessThan(THRESHOLDS.horizontalResolution);
    expect(small.sharpness).toBeGreaterThanOrEqual(THRESHOLDS.sharpness);
    expect(small.glare).toBeGreaterThanOrEqual(THRESHOLDS.glare);
  });

  it('fails the blurry, glare and small backs on exactly their own check, still read as backs', () => {
    const blurry = metrics(samples.blurryIdBack());
    expect(blurry).toMatchObject({ side: 'back' });
    expect(blurry.sharpness).toBeLessThan(THRESHOLDS.sharpness);
    expect(blurry.glare).toBeGreaterThanOrEqual(THRESHOLDS.glare);
    const glare = metrics(samples.glareIdBack());
    expect(glare).toMatchObject({ side: 'back' });
    expect(glare.glare).toBeLessThan(THRESHOLDS.glare);
    expect(glare.sharpness).toBeGreaterThanOrEqual(THRESHOLDS.sharpness);
    const small = metrics(samples.smallIdBack());
    expect(small).toMatchObject({ side: 'back' });
    expect(small.width).toBeLessThan(THRESHOLDS.horizontalResolution);
    expect(small.sharpness).toBeGreaterThanOrEqual(THRESHOLDS.sharpness);
    expect(small.glare).toBeGreaterThanOrEqual(THRESHOLDS.glare);
  });

  it('measures selfie brightness', () => {
    expect(metrics(samples.selfie()).brightness).toBeGreaterThanOrEqual(THRESHOLDS.brightness);
    expect(metrics(samples.darkSelfie()).brightness).toBeLessThan(THRESHOLDS.brightness);
  });

  it('passes real webcam frames (Chromium fake camera) on every check', () => {
    for (const f of ['chromium-fake-camera.jpg', 'chromium-fake-camera-2.jpg']) {
      const m = metrics(readFileSync(`${__dirname}/fixtures/${f}`));
      expect(m).toMatchObject({ width: 640, height: 480, side: 'unknown' });
      expect(m.sharpness).toBeGreaterThanOrEqual(THRESHOLDS.sharpness);
      expect(m.glare).toBeGreaterThanOrEqual(THRESHOLDS.glare);
      expect(m.brightness).toBeGreaterThanOrEqual(THRESHOLDS.brightness);
    }
  });

  it('decodes PNG too', () => {
    const png = new PNG({ width: 40, height: 30 });
    for (let i = 0; i < png.data.length; i += 4) {
      png.data[i] = 255;
      png.data[i + 3] = 255;
    }
    const m = metrics(PNG.sync.write(png));
    expect(m).toMatchObject({ width: 40, height: 30 });
  });

  it('rejects what is not an image', () => {
    expect(() => decodeImage(samples.notAnImage())).toThrow(ImageDecodeError);
    expect(() => decodeImage(Buffer.from([0xff, 0xd8, 0xff, 0x00, 0x01]))).toThrow(ImageDecodeError);
    expect(() => decodeImage(Buffer.from('89504e470d0a1a0a0000', 'hex'))).toThrow(ImageDecodeError);
  });

  it('refuses a PNG declaring a huge image from its header, before inflating anything (a decompression bomb)', () => {
    // A real bomb: 20000 x 20000 RGBA of zeros, whose IDAT deflates to about 1.6 MB; only the header is needed here.
    const png = new PNG({ width: 1, height: 1 });
    const small = PNG.sync.write(png);
    const bomb = Buffer.from(small);
    bomb.writeUInt32BE(20_000, 16);
    bomb.writeUInt32BE(20_000, 20);
    let err: unknown;
    try {
      decodeImage(bomb);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ImageDecodeError);
    // Its IDAT holds a few bytes: inflated first, it would fail as truncated data, not as too large.
    expect(err).toMatchObject({ tooLarge: true, message: 'PNG too large' });
  });

  it('refuses a JPEG of thousands of scans before decoding it (each would be decoded over the whole image)', () => {
    const good = samples.selfie();
    // Empty start-of-scan segments after the image's own: what matters is that no decoder ever walks them.
    const scans = Buffer.concat(Array.from({ length: 5000 }, () => Buffer.from([0xff, 0xda, 0x00, 0x02])));
    const bomb = Buffer.concat([good.subarray(0, good.length - 2), scans, Buffer.from([0xff, 0xd9])]);
    expect(() => decodeImage(bomb)).toThrow(/more than 100 scans/);
    // A real progressive-sized count is fine.
    expect(decodeImage(good).width).toBeGreaterThan(0);
  });

  const smallJpeg = () => Buffer.from(jpeg.encode({ width: 16, height: 16, data: Buffer.alloc(16 * 16 * 4, 200) }, 90).data);
  /** Where the first frame header (SOF0-2) of a JPEG starts, its FF included. */
  const sofAt = (b: Buffer) => [0xc0, 0xc1, 0xc2].map((m) => b.indexOf(Buffer.from([0xff, m]), 2)).filter((i) => i > 0).sort((x, y) => x - y)[0];
  /** A frame header (SOF0) declaring width x height with the given components: [id, h, v]. */
  const sof = (width: number, height: number, comps: [number, number, number][]) => {
    const seg = Buffer.alloc(10 + 3 * comps.length);
    seg.writeUInt16BE(0xffc0, 0);
    seg.writeUInt16BE(8 + 3 * comps.length, 2);
    seg[4] = 8;
    seg.writeUInt16BE(height, 5);
    seg.writeUInt16BE(width, 7);
    seg[9] = comps.length;
    comps.forEach(([id, h, v], i) => seg.set([id, (h << 4) | v, 0], 10 + 3 * i));
    return seg;
  };
  /** A small real JPEG with its frame header replaced by `segment` (or, with `keep`, `segment` added before it). */
  function withFrame(segment: Buffer, keep = false): Buffer {
    const small = smallJpeg();
    const at = sofAt(small);
    const end = at + 2 + small.readUInt16BE(at + 2);
    return Buffer.concat([small.subarray(0, at), segment, keep ? small.subarray(at) : small.subarray(end)]);
  }
  const YCC: [number, number, number][] = [[1, 1, 1], [2, 1, 1], [3, 1, 1]];
  const jpegDeclaring = (width: number, height: number) => withFrame(sof(width, height, YCC));
  const refusal = (b: Buffer) => {
    try {
      decodeImage(b);
    } catch (e) {
      return e as ImageDecodeError;
    }
    throw new Error('decoded');
  };

  it('reads a JPEG as a decoder walks it: its frame header, size and the 8x8 blocks of every component, subsampling counted', () => {
    // The samples are jpeg-js's encodings; the selfie is a real size.
    const sf = samples.selfie();
    const { width, height } = decodeImage(sf);
    // Three components, none subsampled by jpeg-js's encoder: three blocks per 8x8 of the image.
    expect(jpegFrames(sf)).toEqual({ frames: 1, pixels: width * height, width, height, blocks: 3 * Math.ceil(width / 8) * Math.ceil(height / 8), invalid: false });
    // 4:2:0: a luma block per 8x8, each chroma component a quarter of that.
    expect(jpegFrames(withFrame(sof(64, 32, [[1, 2, 2], [2, 1, 1], [3, 1, 1]])))).toMatchObject({ frames: 1, blocks: 8 * 4 + 2 * 4 * 2 });
    expect(jpegFrames(Buffer.from([0xff, 0xd8, 0xff, 0xd9]))).toMatchObject({ frames: 0 });
    // Hostile walks end: a segment length of 0, garbage between markers, a file cut in a header.
    expect(jpegFrames(Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x00, 0x12, 0xff, 0xff, 0xff, 0xc0, 0x00]))).toMatchObject({ frames: 0 });
    expect(jpegFrames(Buffer.concat([Buffer.from([0xff, 0xd8, 0x42, 0x42]), sof(16, 16, YCC)]))).toMatchObject({ frames: 1, width: 16 });
  });

  it('refuses a tiny JPEG declaring a huge frame before decoding it (its decoder allocates every block up front)', () => {
    // 618 bytes that declared 39.9 MP once cost 3 s of the event loop and 1.2 GB.
    const bomb = jpegDeclaring(6320, 6320);
    expect(bomb.length).toBeLessThan(2000);
    expect(refusal(bomb)).toMatchObject({ tooLarge: true, message: 'JPEG too large' });
    // Over 16 MP, and under it with too many blocks (15.6 MP of three full-resolution components: about 440 MB).
    expect(refusal(jpegDeclaring(4900, 3300))).toMatchObject({ tooLarge: true });
    expect(refusal(jpegDeclaring(4600, 3400))).toMatchObject({ tooLarge: true });
    // A frame of a few MP goes on to the decoder, which finds the small image's data too short for it.
    expect(refusal(jpegDeclaring(2000, 1500))).toMatchObject({ tooLarge: false });
  });

  it("counts blocks as jpeg-js allocates them: a repeated component id, a second frame, a frame it would refuse", () => {
    // An id listed twice counts once, as jpeg-js keeps it: the last. Counted as listed, a 4x4 first entry made every
    // component's blocks a sixteenth of what jpeg-js allocates (here 178 MB counted for 450 MB).
    expect(refusal(withFrame(sof(4000, 4000, [[0, 4, 4], [0, 1, 1], [1, 1, 1], [2, 1, 1]])))).toMatchObject({ tooLarge: true });
    // 255 components (ids 0-253 listed after a 4x4 one): refused unread, as jpeg-js could not decode them anyway.
    const manyIds = sof(4000, 4000, [[0, 4, 4], ...Array.from({ length: 254 }, (_, i): [number, number, number] => [i, 1, 1])]);
    expect(refusal(withFrame(manyIds))).toMatchObject({ tooLarge: false, message: 'JPEG could not be decoded: invalid frame header' });
    expect(jpegFrames(withFrame(sof(64, 64, [[1, 1, 1], [1, 1, 1], [1, 1, 1]])))).toMatchObject({ blocks: 64, invalid: false });
    // A tiny frame header, then a huge one: both allocated by jpeg-js before it refuses the second frame.
    const two = withFrame(sof(4000, 4000, [[1, 4, 4], [2, 4, 4], [3, 4, 4]]), true);
    expect(jpegFrames(two)).toMatchObject({ frames: 2 });
    expect(refusal(two)).toMatchObject({ tooLarge: true });
    expect(refusal(withFrame(sof(32, 32, YCC), true))).toMatchObject({ tooLarge: false, message: 'JPEG could not be decoded: more than one frame' });
    // Five components, or a sampling factor of 0 or 5: refused unread.
    expect(refusal(withFrame(sof(32, 32, [[1, 1, 1], [2, 1, 1], [3, 1, 1], [4, 1, 1], [5, 1, 1]])))).toMatchObject({ message: 'JPEG could not be decoded: invalid frame header' });
    expect(refusal(withFrame(sof(32, 32, [[1, 0, 1]])))).toMatchObject({ message: 'JPEG could not be decoded: invalid frame header' });
    expect(refusal(withFrame(sof(32, 32, [[1, 5, 1]])))).toMatchObject({ message: 'JPEG could not be decoded: invalid frame header' });
  });

  it('refuses a 16-bit PNG whose inflated pixels would pass the 8-bit budget, from its header', () => {
    const png = PNG.sync.write(new PNG({ width: 1, height: 1 }));
    const wide = Buffer.from(png);
    wide.writeUInt32BE(4000, 16);
    wide.writeUInt32BE(3500, 20);
    // 14 MP of 8-bit RGBA: within the budget, so the decoder is reached (and fails on the 1-pixel data).
    expect(() => decodeImage(wide)).toThrow(expect.objectContaining({ tooLarge: false }));
    wide[24] = 16;
    expect(() => decodeImage(wide)).toThrow(expect.objectContaining({ tooLarge: true, message: 'PNG too large' }));
  });

  it('reads bare base64, and not a data: URL (Incode wants the base64 without its prefix)', () => {
    const raw = Buffer.from([1, 2, 3, 4]);
    expect(base64ToBuffer(raw.toString('base64'))).toEqual(raw);
    expect(base64ToBuffer(`data:image/jpeg;base64,${raw.toString('base64')}`)).toBeUndefined();
    expect(base64ToBuffer('')).toBeUndefined();
    expect(base64ToBuffer('%%%')).toBeUndefined();
  });
});
