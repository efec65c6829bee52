/**
 * Load time and peak RSS of a falcon-rw-1b-shaped Hugging Face checkpoint (1.3 B parameters, bf16),
 * written once with random weights under bench/.cache. Each load runs in a fresh process so its
 * peak RSS is its own; the page cache is warmed first.
 *
 *   npm run bench:load [-- --runs 5 --dtype bfloat16|float32]
 */
import { execFileSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { randomTensor, writeSafetensors, type TensorToWrite } from "../test/helpers/safetensors-writer.js";
import { summarize } from "./stats.js";

const RW_1B = { vocab: 50304, layers: 24, hidden: 2048, heads: 32, ffn: 8192 };
const here = path.dirname(fileURLToPath(import.meta.url));
const checkpoint = path.resolve(here, "..", "..", "bench", ".cache", "falcon-rw-1b-random-bf16");

function writeCheckpoint(): void {
  mkdirSync(checkpoint, { recursive: true });
  const { vocab, layers, hidden: D, heads, ffn: F } = RW_1B;
  writeFileSync(path.join(checkpoint, "config.json"), JSON.stringify({
    model_type: "falcon", vocab_size: vocab, hidden_size: D, num_hidden_layers: layers, num_attention_heads: heads,
    alibi: true, multi_query: false, new_decoder_architecture: false, parallel_attn: false, bias: true,
    ffn_hidden_size: F, layer_norm_epsilon: 1e-5, torch_dtype: "bfloat16", tie_word_embeddings: true,
  }, null, 2));
  let seed = 1;
  const tensor = (name: string, shape: number[]): TensorToWrite => randomTensor(name, "BF16", shape, seed++);
  const tensors = [tensor("transformer.word_embeddings.weight", [vocab, D])];
  for (let i = 0; i < layers; i++) {
    const p = `transformer.h.${i}.`;
    tensors.push(
      tensor(`${p}input_layernorm.weight`, [D]), tensor(`${p}input_layernorm.bias`, [D]),
      tensor(`${p}self_attention.query_key_value.weight`, [3 * D, D]), tensor(`${p}self_attention.query_key_value.bias`, [3 * D]),
      tensor(`${p}self_attention.dense.weight`, [D, D]), tensor(`${p}self_attention.dense.bias`, [D]),
      tensor(`${p}post_attention_layernorm.weight`, [D]), tensor(`${p}post_attention_layernorm.bias`, [D]),
      tensor(`${p}mlp.dense_h_to_4h.weight`, [F, D]), tensor(`${p}mlp.dense_h_to_4h.bias`, [F]),
      tensor(`${p}mlp.dense_4h_to_h.weight`, [D, F]), tensor(`${p}mlp.dense_4h_to_h.bias`, [D]),
    );
  }
  tensors.push(tensor("transformer.ln_f.weight", [D]), tensor("transformer.ln_f.bias", [D]));
  writeSafetensors(path.join(checkpoint, "model.safetensors"), tensors);
}

function warmPageCache(file: string): void {
  const fd = openSync(file, "r");
  const buffer = Buffer.alloc(64 * 1024 * 1024);
  while (readSync(fd, buffer) > 0);
  closeSync(fd);
}

/** Child mode: load once, print {ms, peakRssBytes, parameters} as JSON. */
async function loadOnce(dtype: string): Promise<void> {
  const { FalconBackbone } = await import("../src/index.js");
  const start = performance.now();
  const model = await FalconBackbone.fromPreset(checkpoint, { dtype: dtype as "bfloat16" });
  const ms = performance.now() - start;
  const info = model.info();
  process.stdout.write(JSON.stringify({ ms, peakRssBytes: process.resourceUsage().maxRSS * 1024, parameters: info.parameterCount, weightBytes: info.weightBytes }));
  model.dispose();
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: "string", default: "5" }, dtype: { type: "string", default: "bfloat16" }, child: { type: "boolean" } } });
  if (values.child) return loadOnce(values.dtype!);
  const file = path.join(checkpoint, "model.safetensors");
  if (!existsSync(file)) {
    console.log(`writing ${checkpoint} (about 2.6 GB) ...`);
    writeCheckpoint();
  }
  const fileBytes = statSync(file).size;
  warmPageCache(file);
  const runs = Number(values.runs);
  const results = [];
  for (let i = 0; i < runs; i++) {
    const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), "--child", "--dtype", values.dtype!], { encoding: "utf8" });
    results.push(JSON.parse(out) as { ms: number; peakRssBytes: number; parameters: number; weightBytes: number });
  }
  const gib = (bytes: number) => (bytes / 2 ** 30).toFixed(2);
  const time = summarize(results.map((r) => r.ms));
  const rss = summarize(results.map((r) => r.peakRssBytes));
  console.log(`checkpoint  ${checkpoint}: ${results[0].parameters.toLocaleString("en-US")} parameters, ${gib(fileBytes)} GiB bf16 safetensors`);
  console.log(`model       dtype ${values.dtype}, weights ${gib(results[0].weightBytes)} GiB`);
  console.log(`load time   median ${time.median.toFixed(0)} ms (min ${time.min.toFixed(0)}, max ${time.max.toFixed(0)}) over ${runs} fresh processes, warm page cache`);
  console.log(`peak RSS    median ${gib(rss.median)} GiB (min ${gib(rss.min)}, max ${gib(rss.max)}) = ${(rss.median / fileBytes).toFixed(2)} × the checkpoint`);
}

await main();
