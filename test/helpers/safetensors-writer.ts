/** Safetensors files for tests and the load benchmark: the package's writer, and seeded random tensors. */
import type { TensorToWrite } from "../../src/presets/safetensors-writer.js";

export { writeSafetensors, type TensorToWrite } from "../../src/presets/safetensors-writer.js";

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
