/** Corrupt or hostile safetensors files and inconsistent HF configs: each gets its own error. */
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";

import { FalconCausalLM, FalconPresetError } from "../src/index.js";
import { native } from "../src/native.js";
import { readSafetensorsHeader } from "../src/presets/safetensors.js";
import { FIXTURES } from "./helpers/fixtures.js";
import { randomTensor, writeSafetensors } from "./helpers/safetensors-writer.js";

const SOURCE = path.join(FIXTURES, "hf", "rw_alibi_mha_sequential", "checkpoint");
const temporary: string[] = [];
after(() => temporary.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "falcon-st-"));
  temporary.push(dir);
  return dir;
}

/** A copy of the fixture checkpoint whose model.safetensors is then damaged by `damage`. */
function damagedCheckpoint(damage: (file: string) => void): string {
  const dir = tempDir();
  copyFileSync(path.join(SOURCE, "config.json"), path.join(dir, "config.json"));
  copyFileSync(path.join(SOURCE, "model.safetensors"), path.join(dir, "model.safetensors"));
  damage(path.join(dir, "model.safetensors"));
  return dir;
}

/** Rewrites the checkpoint's header through `edit`, keeping the tensor bytes (offsets are relative to them). */
function editHeader(file: string, edit: (header: Record<string, any>) => void): void {
  const bytes = readFileSync(file);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.toString("utf8", 8, 8 + length));
  edit(header);
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([prefix, json, bytes.subarray(8 + length)]));
}

async function rejects(dir: string, message: RegExp): Promise<void> {
  await assert.rejects(FalconCausalLM.fromPreset(dir), (error: Error) => {
    assert.ok(error instanceof FalconPresetError, `${error.name}: ${error.message}`);
    assert.match(error.message, message);
    return true;
  });
}

const EMBEDDING = "transformer.word_embeddings.weight";

describe("corrupt safetensors", () => {
  it("reports a truncated file", async () => {
    const dir = damagedCheckpoint((file) => truncateSync(file, Math.floor(readFileSync(file).length * 0.7)));
    await rejects(dir, /data_offsets \[\d+, \d+\] fall outside the \d+ data bytes; the file is truncated/);
  });

  it("reports a header length past the end of the file", async () => {
    const dir = damagedCheckpoint((file) => {
      const bytes = readFileSync(file);
      bytes.writeBigUInt64LE(BigInt(bytes.length), 0);
      writeFileSync(file, bytes);
    });
    await rejects(dir, /header length \d+ runs past the end of the file/);
  });

  it("refuses a hostile header length without allocating it", async () => {
    const dir = damagedCheckpoint((file) => {
      const bytes = readFileSync(file);
      bytes.writeBigUInt64LE(0xffffffffffffff00n, 0);
      writeFileSync(file, bytes);
    });
    await rejects(dir, /runs past the end of the file/);
  });

  it("reports overlapping tensors", async () => {
    const dir = damagedCheckpoint((file) => editHeader(file, (header) => {
      const [name] = Object.keys(header).filter((k) => k !== "__metadata__" && k !== EMBEDDING && header[k].shape.length === 1);
      const target = header[name];
      const size = target.data_offsets[1] - target.data_offsets[0];
      target.data_offsets = [header[EMBEDDING].data_offsets[0], header[EMBEDDING].data_offsets[0] + size];
    }));
    await rejects(dir, /overlap/);
  });

  it("reports an unsupported dtype", async () => {
    const dir = damagedCheckpoint((file) => editHeader(file, (header) => {
      header[EMBEDDING].dtype = "I32";
    }));
    await rejects(dir, new RegExp(`tensor "${EMBEDDING.replace(/\./g, "\\.")}" has dtype string "I32"`));
  });

  it("quotes a dtype string from the file only in part", async () => {
    const dir = damagedCheckpoint((file) => editHeader(file, (header) => {
      header[EMBEDDING].dtype = "X".repeat(1_000_000);
    }));
    await rejects(dir, /has dtype string "X{40}…"; supported dtypes/);
  });

  it("reports a shape that does not match its byte range", async () => {
    const dir = damagedCheckpoint((file) => editHeader(file, (header) => {
      header[EMBEDDING].shape = [101, 47];
    }));
    await rejects(dir, /shape \[101, 47\] of F32 needs 18988 bytes but data_offsets span 19392/);
  });

  it("reports malformed header JSON", async () => {
    const dir = damagedCheckpoint((file) => {
      const bytes = readFileSync(file);
      bytes.write("{{", 8);
      writeFileSync(file, bytes);
    });
    await rejects(dir, /malformed header JSON/);
  });

  it("reports a tensor whose shape does not fit the config", async () => {
    const dir = tempDir();
    copyFileSync(path.join(SOURCE, "config.json"), path.join(dir, "config.json"));
    const config = JSON.parse(readFileSync(path.join(SOURCE, "config.json"), "utf8"));
    config.ffn_hidden_size = 96;
    writeFileSync(path.join(dir, "config.json"), JSON.stringify(config));
    copyFileSync(path.join(SOURCE, "model.safetensors"), path.join(dir, "model.safetensors"));
    await rejects(dir, /dense_h_to_4h\.weight" has shape \[192, 48\], expected \[96, 48\]/);
  });

  it("reports missing and unexpected tensors", async () => {
    const missing = damagedCheckpoint((file) => editHeader(file, (header) => {
      header["transformer.h.1.mlp.dense_h_to_4h.bias_"] = header["transformer.h.1.mlp.dense_h_to_4h.bias"];
      delete header["transformer.h.1.mlp.dense_h_to_4h.bias"];
    }));
    await rejects(missing, /missing tensor "transformer\.h\.1\.mlp\.dense_h_to_4h\.bias"/);
  });

  it("reports an unexpected tensor", async () => {
    const dir = tempDir();
    copyFileSync(path.join(SOURCE, "config.json"), path.join(dir, "config.json"));
    const file = path.join(dir, "model.safetensors");
    const tensors = [...readSafetensorsHeader(path.join(SOURCE, "model.safetensors")).values()];
    const source = readFileSync(path.join(SOURCE, "model.safetensors"));
    writeSafetensors(file, [
      ...tensors.map((t) => ({ name: t.name, dtype: "F32", shape: t.shape, byteLength: t.byteLength,
        fill: (out: Uint8Array, offset: number) => out.set(source.subarray(t.byteOffset + offset, t.byteOffset + offset + out.length)) })),
      randomTensor("transformer.h.0.extra.weight", "F32", [4], 1),
    ]);
    await rejects(dir, /unexpected tensor "transformer\.h\.0\.extra\.weight"/);
  });

  it("checks ranges natively too: a byte range past the end of the file is refused", async () => {
    const dir = damagedCheckpoint(() => undefined);
    const lm = await FalconCausalLM.fromPreset(dir);
    const model = await lm.backbone.nativeModel();
    const file = new (native().NativeWeightFile)(path.join(dir, "model.safetensors"));
    await assert.rejects(async () => model.setWeightFromFile("token_embedding", 0, file, file.size() - 4, "float32", 1, 48, false), /needs bytes/);
    file.dispose();
    lm.dispose();
  });
});

describe("unsupported Hugging Face configs", () => {
  const cases: [string, (config: Record<string, unknown>) => void, RegExp][] = [
    ["a non-GELU activation", (c) => { c.activation = "relu"; }, /activation "relu" is not supported/],
    ["the new architecture without parallel attention", (c) => { c.new_decoder_architecture = true; c.parallel_attn = false; }, /parallel_attn=false/],
    ["an unknown rope scaling type", (c) => { c.alibi = false; c.rope_scaling = { type: "yarn", factor: 2 }; }, /rope scaling type "yarn"/],
    ["rope scaling with ALiBi", (c) => { c.rope_scaling = { type: "linear", factor: 2 }; }, /cannot be combined with ALiBi/],
    ["another model type", (c) => { c.model_type = "llama"; }, /neither a keras-hub preset .* nor a Hugging Face Falcon checkpoint/],
  ];
  for (const [label, edit, message] of cases) {
    it(`refuses ${label}`, async () => {
      const dir = tempDir();
      const config = JSON.parse(readFileSync(path.join(SOURCE, "config.json"), "utf8"));
      edit(config);
      writeFileSync(path.join(dir, "config.json"), JSON.stringify(config));
      copyFileSync(path.join(SOURCE, "model.safetensors"), path.join(dir, "model.safetensors"));
      await rejects(dir, message);
    });
  }

  it("reads a legacy RefinedWebModel config (n_head, n_layer, n_embed)", async () => {
    const dir = tempDir();
    const config = JSON.parse(readFileSync(path.join(SOURCE, "config.json"), "utf8"));
    const legacy = { ...config, model_type: "RefinedWebModel", n_head: config.num_attention_heads, n_layer: config.num_hidden_layers, n_embed: config.hidden_size };
    for (const key of ["num_attention_heads", "num_hidden_layers", "hidden_size"]) delete legacy[key];
    writeFileSync(path.join(dir, "config.json"), JSON.stringify(legacy));
    copyFileSync(path.join(SOURCE, "model.safetensors"), path.join(dir, "model.safetensors"));
    const [a, b] = [await FalconCausalLM.fromPreset(dir), await FalconCausalLM.fromPreset(SOURCE)];
    assert.deepEqual(a.backbone.getConfig(), b.backbone.getConfig());
    a.dispose();
    b.dispose();
  });
});
