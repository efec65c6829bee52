/** Reads NumPy .npy files (the fixtures' format): header dict, then little-endian C-order data. */
import { readFileSync } from "node:fs";

export interface NpyArray {
  shape: number[];
  /** Values widened to float64 (ids and masks included), row-major. */
  data: Float64Array;
}

export function readNpy(file: string): NpyArray {
  const bytes = readFileSync(file);
  if (bytes.toString("latin1", 1, 6) !== "NUMPY") throw new Error(`${file}: not an .npy file`);
  const major = bytes[6];
  const headerLength = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const headerStart = major === 1 ? 10 : 12;
  const header = bytes.toString("latin1", headerStart, headerStart + headerLength);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || shapeText === undefined || /'fortran_order':\s*True/.test(header)) throw new Error(`${file}: unsupported header ${header}`);
  const shape = shapeText.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const body = bytes.subarray(headerStart + headerLength);
  const data = new Float64Array(count);
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const readers: Record<string, [number, (offset: number) => number]> = {
    "<f4": [4, (o) => view.getFloat32(o, true)],
    "<f8": [8, (o) => view.getFloat64(o, true)],
    "<i4": [4, (o) => view.getInt32(o, true)],
    "<i8": [8, (o) => Number(view.getBigInt64(o, true))],
    "|b1": [1, (o) => view.getUint8(o)],
    "|u1": [1, (o) => view.getUint8(o)],
  };
  const reader = readers[descr];
  if (!reader) throw new Error(`${file}: unsupported dtype ${descr}`);
  const [size, read] = reader;
  for (let i = 0; i < count; i++) data[i] = read(i * size);
  return { shape, data };
}
