/** Writes safetensors files, streaming tensor data, for tests and the load benchmark. */
import { closeSync, openSync, writeSync } from "node:fs";

export interface TensorToWrite {
  name: string;
  dtype: "F32" | "F16" | "BF16" | string;
  shape: number[];
  byteLength: number;
  /** Fills `out` (a chunk of the tensor starting at byte `offset`). */
  fill: (out: Uint8Array, offset: number) => void;
}

const CHUNK_BYTES = 16 * 1024 * 1024;

/** Writes tensors back to back; `editHeader` may corrupt the header JSON for negative tests. */
export function writeSafetensors(file: string, tensors: TensorToWrite[], editHeader?: (header: Record<string, unknown>) => void): void {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let offset = 0;
  for (const tensor of tensors) {
    header[tensor.name] = { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, offset + tensor.byteLength] };
    offset += tensor.byteLength;
  }
  editHeader?.(header);
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);  // keeps tensor data 8-byte aligned, as the reference writer does
  const lengthBytes = Buffer.alloc(8);
  lengthBytes.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const fd = openSync(file, "w");
  try {
    writeSync(fd, lengthBytes);
    writeSync(fd, json);
    const chunk = new Uint8Array(CHUNK_BYTES);
    for (const tensor of tensors) {
      for (let done = 0; done < tensor.byteLength; done += CHUNK_BYTES) {
        const part = chunk.subarray(0, Math.min(CHUNK_BYTES, tensor.byteLength - done));
        tensor.fill(part, done);
        writeSync(fd, part);
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** Seeded pseudo-random values in ±0.02, as float32 or bfloat16. */
export function randomTensor(name: string, dtype: "F32" | "BF16", shape: number[], seed: number): TensorToWrite {
  const elementSize = dtype === "F32" ? 4 : 2;
  const count = shape.reduce((a, b) => a * b, 1);
  return {
    name, dtype, shape, byteLength: count * elementSize,
    fill(out, offset) {
      const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
      let state = (seed * 0x9e3779b1 + offset) >>> 0;
      for (let i = 0; i < out.byteLength; i += elementSize) {
        state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
        const value = ((state >>> 8) / 0x1000000 - 0.5) * 0.04;
        if (dtype === "F32") view.setFloat32(i, value, true);
        else view.setUint16(i, new Uint32Array(new Float32Array([value]).buffer)[0] >>> 16, true);
      }
    },
  };
}
