// Deterministic synthetic ID cards and selfies (JPEG via jpeg-js) that drive every pixel-derived outcome.
import * as jpeg from 'jpeg-js';
import { BACK_BACKGROUND, FRONT_BACKGROUND } from './image-analysis';

type RGB = readonly [number, number, number];

// Local aliases: global lookups of Math are slow inside sandboxed runners (jest's vm), and these run per pixel.
const { min, max, floor, ceil, round, sqrt, sin, PI } = Math;

/** Minimal RGBA raster; just enough primitives to make something that reads as an ID card. */
class Canvas {
  readonly data: Uint8Array;

  constructor(
    readonly width: number,
    readonly height: number,
    bg: RGB,
  ) {
    this.data = new Uint8Array(width * height * 4);
    this.rect(0, 0, width, height, bg);
  }

  private put(x: number, y: number, c: RGB, alpha = 1): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const p = (y * this.width + x) * 4;
    const d = this.data;
    if (alpha >= 1) {
      d[p] = c[0];
      d[p + 1] = c[1];
      d[p + 2] = c[2];
    } else {
      d[p] = d[p] + (c[0] - d[p]) * alpha;
      d[p + 1] = d[p + 1] + (c[1] - d[p + 1]) * alpha;
      d[p + 2] = d[p + 2] + (c[2] - d[p + 2]) * alpha;
    }
    d[p + 3] = 255;
  }

  rect(x0: number, y0: number, w: number, h: number, c: RGB): void {
    for (let y = max(0, y0); y < min(this.height, y0 + h); y++) {
      for (let x = max(0, x0); x < min(this.width, x0 + w); x++) this.put(x, y, c);
    }
  }

  /** Filled ellipse; `clip` limits it to a rectangle (e.g. the photo frame). */
  ellipse(cx: number, cy: number, rx: number, ry: number, c: RGB, clip?: [number, number, number, number]): void {
    const [cx0, cy0, cx1, cy1] = clip ?? [0, 0, this.width, this.height];
    for (let y = max(cy0, floor(cy - ry)); y <= min(cy1 - 1, ceil(cy + ry)); y++) {
      for (let x = max(cx0, floor(cx - rx)); x <= min(cx1 - 1, ceil(cx + rx)); x++) {
        const dx = (x - cx) / rx;
        const dy = (y - cy) / ry;
        if (dx * dx + dy * dy <= 1) this.put(x, y, c);
      }
    }
  }

  /** Vertical gradient fill. */
  gradient(x0: number, y0: number, w: number, h: number, top: RGB, bottom: RGB): void {
    for (let y = y0; y < y0 + h; y++) {
      const t = (y - y0) / max(1, h - 1);
      const c: RGB = [top[0] + (bottom[0] - top[0]) * t, top[1] + (bottom[1] - top[1]) * t, top[2] + (bottom[2] - top[2]) * t];
      for (let x = x0; x < x0 + w; x++) this.put(x, y, c);
    }
  }

  /** Thin sine lines, the "guilloche" security pattern look. */
  waves(x0: number, y0: number, w: number, h: number, c: RGB, lines: number, amp: number, period: number): void {
    for (let k = 0; k < lines; k++) {
      const base = y0 + ((k + 0.5) * h) / lines;
      for (let x = x0; x < x0 + w; x++) {
        const y = round(base + amp * sin((x / period) * 2 * PI + k * 0.7));
        this.put(x, y, c, 0.8);
        this.put(x, y + 1, c, 0.4);
      }
    }
  }

  /** A row of word-like blocks standing in for printed text. */
  text(x0: number, y: number, maxW: number, h: number, c: RGB, rand: () => number): void {
    let x = x0;
    while (x < x0 + maxW) {
      const wordW = round(h * (1.2 + rand() * 3.5));
      if (x + wordW > x0 + maxW) break;
      for (let cx = x; cx < x + wordW; cx += round(h * 0.62)) this.rect(cx, y, round(h * 0.5), h, c);
      x += wordW + round(h * 0.6);
      if (rand() < 0.15) break;
    }
  }

  /** Separable box blur, `passes` times (three passes approximate a Gaussian). */
  blur(radius: number, passes = 3): void {
    const { width: w, height: h, data } = this;
    const tmp = new Float32Array(max(w, h) * 3);
    for (let pass = 0; pass < passes; pass++) {
      for (let y = 0; y < h; y++) blurLine(data, y * w * 4, 4, w, radius, tmp);
      for (let x = 0; x < w; x++) blurLine(data, x * 4, w * 4, h, radius, tmp);
    }
  }

  scaled(w: number, h: number): Canvas {
    const out = new Canvas(w, h, [0, 0, 0]);
    const fx = this.width / w;
    const fy = this.height / h;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        // Box average over the source footprint, so downscaling does not alias.
        let r = 0;
        let g = 0;
        let b = 0;
        let k = 0;
        for (let sy = floor(y * fy); sy < floor((y + 1) * fy); sy++) {
          for (let sx = floor(x * fx); sx < floor((x + 1) * fx); sx++) {
            const p = (sy * this.width + sx) * 4;
            r += this.data[p];
            g += this.data[p + 1];
            b += this.data[p + 2];
            k++;
          }
        }
        const q = (y * w + x) * 4;
        out.data[q] = r / k;
        out.data[q + 1] = g / k;
        out.data[q + 2] = b / k;
        out.data[q + 3] = 255;
      }
    }
    return out;
  }

  crop(x0: number, y0: number, w: number, h: number): Canvas {
    const out = new Canvas(w, h, [0, 0, 0]);
    for (let y = 0; y < h; y++) {
      const s = ((y0 + y) * this.width + x0) * 4;
      out.data.set(this.data.subarray(s, s + w * 4), y * w * 4);
    }
    return out;
  }

  map(fn: (v: number) => number): void {
    for (let p = 0; p < this.data.length; p += 4) {
      this.data[p] = fn(this.data[p]);
      this.data[p + 1] = fn(this.data[p + 1]);
      this.data[p + 2] = fn(this.data[p + 2]);
    }
  }

  jpeg(quality = 88): Buffer {
    return jpeg.encode({ width: this.width, height: this.height, data: this.data }, quality).data;
  }
}

function blurLine(d: Uint8Array, start: number, stride: number, len: number, r: number, tmp: Float32Array): void {
  for (let i = 0; i < len; i++) {
    const p = start + i * stride;
    tmp[i * 3] = d[p];
    tmp[i * 3 + 1] = d[p + 1];
    tmp[i * 3 + 2] = d[p + 2];
  }
  for (let c = 0; c < 3; c++) {
    let sum = 0;
    // Edge pixels repeat, so a plain background stays exactly its colour near the borders.
    for (let k = -r; k <= r; k++) sum += tmp[min(len - 1, max(0, k)) * 3 + c];
    for (let i = 0; i < len; i++) {
      d[start + i * stride + c] = sum / (2 * r + 1);
      const add = min(len - 1, i + r + 1);
      const drop = max(0, i - r);
      sum += tmp[add * 3 + c] - tmp[drop * 3 + c];
    }
  }
}

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SKIN: RGB = [226, 184, 152];
const HAIR: RGB = [74, 52, 40];
const INK: RGB = [24, 28, 40];
const LABEL: RGB = [92, 104, 128];

export const ID_WIDTH = 1200;
export const ID_HEIGHT = 760;

function drawPortrait(c: Canvas, x0: number, y0: number, w: number, h: number, bg: RGB): void {
  const clip: [number, number, number, number] = [x0, y0, x0 + w, y0 + h];
  c.rect(x0, y0, w, h, bg);
  const cx = x0 + w / 2;
  const s = w / 320;
  c.ellipse(cx, y0 + h * 1.02, 150 * s, 120 * s, [52, 66, 96], clip);
  c.rect(round(cx - 32 * s), round(y0 + h * 0.58), round(64 * s), round(70 * s), [210, 168, 138]);
  c.ellipse(cx, y0 + h * 0.36, 100 * s, 118 * s, HAIR, clip);
  c.ellipse(cx, y0 + h * 0.42, 86 * s, 110 * s, SKIN, clip);
  c.ellipse(cx - 32 * s, y0 + h * 0.39, 14 * s, 8 * s, [250, 250, 250]);
  c.ellipse(cx + 32 * s, y0 + h * 0.39, 14 * s, 8 * s, [250, 250, 250]);
  c.ellipse(cx - 32 * s, y0 + h * 0.39, 6 * s, 6 * s, [60, 44, 30]);
  c.ellipse(cx + 32 * s, y0 + h * 0.39, 6 * s, 6 * s, [60, 44, 30]);
  c.rect(round(cx - 48 * s), round(y0 + h * 0.335), round(32 * s), round(6 * s), HAIR);
  c.rect(round(cx + 16 * s), round(y0 + h * 0.335), round(32 * s), round(6 * s), HAIR);
  c.ellipse(cx, y0 + h * 0.47, 8 * s, 18 * s, [206, 160, 130]);
  c.ellipse(cx, y0 + h * 0.56, 30 * s, 8 * s, [168, 76, 76]);
}

function frontCanvas(): Canvas {
  const rand = prng(7);
  const c = new Canvas(ID_WIDTH, ID_HEIGHT, FRONT_BACKGROUND);
  c.rect(0, 0, ID_WIDTH, 6, [90, 130, 180]);
  c.rect(0, ID_HEIGHT - 6, ID_WIDTH, 6, [90, 130, 180]);
  c.waves(420, 160, 740, 540, [146, 186, 224], 18, 10, 160);
  c.rect(96, 40, 1008, 96, [22, 62, 122]);
  c.ellipse(150, 88, 34, 34, [236, 196, 80]);
  c.text(210, 64, 600, 26, [245, 245, 250], rand);
  c.text(210, 102, 380, 16, [200, 214, 236], rand);
  drawPortrait(c, 70, 170, 320, 420, [222, 226, 234]);
  for (let row = 0; row < 6; row++) {
    const y = 180 + row * 78;
    c.text(440, y, 260, 14, LABEL, rand);
    c.text(440, y + 24, 620, 28, INK, rand);
  }
  // Signature-like stroke under the photo.
  for (let x = 80; x < 380; x++) c.rect(x, round(640 + 14 * sin(x / 17) + 6 * sin(x / 5)), 2, 3, [30, 40, 110]);
  return c;
}

function backCanvas(): Canvas {
  const rand = prng(11);
  const c = new Canvas(ID_WIDTH, ID_HEIGHT, BACK_BACKGROUND);
  c.rect(0, 0, ID_WIDTH, 6, [170, 140, 90]);
  c.rect(0, ID_HEIGHT - 6, ID_WIDTH, 6, [170, 140, 90]);
  c.waves(90, 250, 1020, 240, [222, 204, 160], 10, 8, 120);
  // 1D barcode band.
  c.rect(90, 60, 1020, 150, [250, 250, 246]);
  let x = 110;
  while (x < 1090) {
    const bw = 2 + floor(rand() * 7);
    c.rect(x, 75, bw, 120, INK);
    x += bw + 2 + floor(rand() * 6);
  }
  for (let row = 0; row < 3; row++) {
    c.text(110, 260 + row * 70, 240, 14, LABEL, rand);
    c.text(110, 282 + row * 70, 900, 26, INK, rand);
  }
  // MRZ: three lines of monospace blocks on a light band.
  c.rect(90, 520, 1020, 190, [248, 246, 238]);
  for (let line = 0; line < 3; line++) {
    for (let k = 0; k < 30; k++) {
      if (rand() < 0.2) continue;
      c.rect(110 + k * 33, 540 + line * 56, 22, 36, INK);
    }
  }
  return c;
}

function selfieCanvas(): Canvas {
  const w = 1000;
  const h = 1200;
  const c = new Canvas(w, h, [0, 0, 0]);
  c.gradient(0, 0, w, h, [206, 216, 230], [168, 184, 206]);
  // Bookshelf-ish background detail so the scene is not a flat wall.
  const spines: RGB[] = [[140, 90, 70], [70, 110, 140], [190, 170, 90]];
  for (let k = 0; k < 9; k++) c.rect(40 + k * 36, 120 + (k % 3) * 10, 24, 200 - (k % 3) * 10, spines[k % 3]);
  c.ellipse(500, 1260, 430, 330, [48, 72, 118]);
  c.rect(430, 760, 140, 200, [212, 170, 140]);
  c.ellipse(500, 470, 270, 320, HAIR);
  c.ellipse(500, 540, 235, 300, SKIN);
  c.ellipse(410, 500, 40, 22, [250, 250, 250]);
  c.ellipse(590, 500, 40, 22, [250, 250, 250]);
  c.ellipse(410, 500, 17, 17, [70, 50, 34]);
  c.ellipse(590, 500, 17, 17, [70, 50, 34]);
  c.rect(360, 440, 100, 16, HAIR);
  c.rect(540, 440, 100, 16, HAIR);
  c.ellipse(500, 590, 22, 58, [206, 160, 130]);
  c.ellipse(500, 700, 80, 22, [170, 78, 80]);
  return c;
}

const cache = new Map<string, Buffer>();
function memo(key: string, make: () => Buffer): Buffer {
  let b = cache.get(key);
  if (!b) {
    b = make();
    cache.set(key, b);
  }
  return b;
}

/** A good front: crisp, no glare, 1200 px wide, blue background with a portrait. */
export const idFront = (): Buffer => memo('front', () => frontCanvas().jpeg());
/** A good back: beige background, barcode and MRZ, no portrait. */
export const idBack = (): Buffer => memo('back', () => backCanvas().jpeg());
/** A good selfie, 1000x1200, well lit. */
export const selfie = (): Buffer => memo('selfie', () => selfieCanvas().jpeg());

/** A card heavily blurred: sharpness < 10. High quality: JPEG block noise would otherwise read as edges. */
function blurred(c: Canvas): Buffer {
  c.blur(20, 3);
  return c.jpeg(95);
}

/** A card with a large blown-out reflection: glare < 10. */
function withGlare(c: Canvas): Buffer {
  const cx = 760;
  const cy = 380;
  const rx = 420;
  const ry = 300;
  for (let y = 0; y < c.height; y++) {
    for (let x = 0; x < c.width; x++) {
      const d = sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2);
      if (d > 1.3) continue;
      const p = (y * c.width + x) * 4;
      // Fully saturated core, soft halo: what a phone flash on a laminated card does.
      const a = d <= 1 ? 1 : (1.3 - d) / 0.3;
      for (let k = 0; k < 3; k++) c.data[p + k] = c.data[p + k] + (255 - c.data[p + k]) * a;
    }
  }
  return c.jpeg(92);
}

/** A card at 150x95: horizontalResolution < 155. */
const tiny = (c: Canvas): Buffer => c.scaled(150, 95).jpeg(92);

/** The front, heavily blurred: sharpness < 10. */
export const blurryIdFront = (): Buffer => memo('blurry', () => blurred(frontCanvas()));
/** The front with a large blown-out reflection: glare < 10. */
export const glareIdFront = (): Buffer => memo('glare', () => withGlare(frontCanvas()));
/** The front at 150x95: horizontalResolution < 155. */
export const smallIdFront = (): Buffer => memo('small', () => tiny(frontCanvas()));
/** The back, each failing the same one check as the fronts above: the guide checks both sides alike. */
export const blurryIdBack = (): Buffer => memo('blurry-back', () => blurred(backCanvas()));
export const glareIdBack = (): Buffer => memo('glare-back', () => withGlare(backCanvas()));
export const smallIdBack = (): Buffer => memo('small-back', () => tiny(backCanvas()));

/** The selfie at ~10% exposure: isBright false. */
export const darkSelfie = (): Buffer =>
  memo('dark', () => {
    const c = selfieCanvas();
    c.map((v) => v * 0.1);
    return c.jpeg();
  });

/** Small face crop from the front's portrait, served as croppedIDFace by get/images. */
export const croppedIdFace = (): Buffer => memo('face', () => frontCanvas().crop(90, 190, 280, 360).scaled(140, 180).jpeg(80));

/** Thumbnails of the cards, served by get/images for the document keys. */
export const idFrontThumbnail = (): Buffer => memo('front-thumb', () => frontCanvas().scaled(300, 190).jpeg(80));
export const idBackThumbnail = (): Buffer => memo('back-thumb', () => backCanvas().scaled(300, 190).jpeg(80));

/** Bytes that are not an image at all. */
export const notAnImage = (): Buffer => Buffer.from('This is not an image, just some text pretending to be one.\n');
