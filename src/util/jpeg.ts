// JPEG structure shared by the broker's image checks and the emulator's decoding.

/** Start-of-frame markers: baseline, extended, progressive and lossless, Huffman or arithmetic (not DHT C4, JPG C8, DAC CC). */
export const SOF_MARKERS: ReadonlySet<number> = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);
