/**
 * Writes safetensors files, streaming tensor data chunk by chunk so a large tensor never needs a second
 * copy in memory: the tiny checkpoint `falcon-native run --save` writes, and the tests' files.
 */
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

/** Writes tensors back to back; `editHeader` may change the header JSON (the tests' hostile files). */
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
