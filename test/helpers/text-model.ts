/**
 * A tiny Hugging Face Falcon checkpoint with the real GPT-2 tokenizer (vocabulary 50304 > 50257 tokens,
 * as falcon-rw-1b) whose next token is fixed by construction, for text-generation tests.
 *
 * Attention and MLP write zeros, so the final hidden state is the layer-normed embedding of the
 * current token. Embeddings are one-hot: the tokens of CYCLE_TEXT get dimensions 1..n, every other
 * token dimension 0. The untied head maps dimension k to the token after it, so greedy decoding
 * from any prompt spells CYCLE_TEXT over and over (most of its tokens are partial UTF-8 characters).
 * The 47 padded vocabulary rows score higher than anything: a sampler that looks at them picks them.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { FalconTokenizer } from "../../src/tokenizer.js";
import { END_OF_TEXT_ID, gpt2Vocabulary, hfTokenizerJson, writeKerasPreset } from "./gpt2-vocab.js";
import { seededRandom } from "./seeded-random.js";
import { writeSafetensors, type TensorToWrite } from "./safetensors-writer.js";

export const MODEL_VOCABULARY = 50304;
export const TOKENIZER_VOCABULARY = 50257;
/** An eagle and "Japan": 8 tokens, 6 of which end inside a UTF-8 character. */
export const CYCLE_TEXT = "🦅 日本";
const HIDDEN = 32;
const FFN = 64;

function tensor(name: string, shape: number[], values: (index: number) => number = () => 0): TensorToWrite {
  const count = shape.reduce((a, b) => a * b, 1);
  return {
    name, dtype: "F32", shape, byteLength: count * 4,
    fill(out, offset) {
      const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
      for (let i = 0; i < out.byteLength; i += 4) view.setFloat32(i, values((offset + i) / 4), true);
    },
  };
}

/** Writes the checkpoint (config.json, generation_config.json, model.safetensors, tokenizer.json) into dir. */
export function writeCycleCheckpoint(dir: string): { cycle: Int32Array; tokenizer: FalconTokenizer } {
  mkdirSync(dir, { recursive: true });
  const vocab = gpt2Vocabulary();
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(hfTokenizerJson(vocab, "pair")));
  const tokenizer = FalconTokenizer.fromPreset(dir);
  const cycle = tokenizer.encode(CYCLE_TEXT);
  if (new Set(cycle).size !== cycle.length || cycle.length + 1 > HIDDEN) throw new Error("cycle tokens must be distinct and fit");
  const dimensionOf = new Map<number, number>(Array.from(cycle, (id, k) => [id, k + 1]));
  // Head row of token t: the dimension of the token before it in the cycle (dimension 0 for cycle[0]:
  // any other token, and the last cycle token, lead to cycle[0]).
  const headDimensions = new Map<number, number[]>();
  cycle.forEach((id, k) => headDimensions.set(id, k === 0 ? [0, cycle.length] : [k]));
  const D = HIDDEN;
  writeFileSync(join(dir, "config.json"), JSON.stringify({
    architectures: ["FalconForCausalLM"], model_type: "falcon", alibi: true, bias: true, multi_query: false,
    new_decoder_architecture: false, parallel_attn: false, num_attention_heads: 2, num_hidden_layers: 1,
    hidden_size: D, ffn_hidden_size: FFN, vocab_size: MODEL_VOCABULARY, layer_norm_epsilon: 1e-5,
    tie_word_embeddings: false, bos_token_id: END_OF_TEXT_ID, eos_token_id: END_OF_TEXT_ID, torch_dtype: "float32",
  }, null, 2));
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ bos_token_id: END_OF_TEXT_ID, eos_token_id: END_OF_TEXT_ID }));
  const p = "transformer.h.0.";
  writeSafetensors(join(dir, "model.safetensors"), [
    tensor("transformer.word_embeddings.weight", [MODEL_VOCABULARY, D], (i) => {
      const [row, col] = [Math.floor(i / D), i % D];
      return col === (dimensionOf.get(row) ?? 0) ? 1 : 0;
    }),
    tensor("lm_head.weight", [MODEL_VOCABULARY, D], (i) => {
      const [row, col] = [Math.floor(i / D), i % D];
      if (row >= TOKENIZER_VOCABULARY) return col <= cycle.length ? 20 : 0;  // padded rows: the best logits
      return headDimensions.get(row)?.includes(col) ? 10 : 0;
    }),
    tensor(`${p}input_layernorm.weight`, [D], () => 1),
    tensor(`${p}input_layernorm.bias`, [D]),
    tensor(`${p}post_attention_layernorm.weight`, [D], () => 1),
    tensor(`${p}post_attention_layernorm.bias`, [D]),
    tensor(`${p}self_attention.query_key_value.weight`, [3 * D, D]),
    tensor(`${p}self_attention.query_key_value.bias`, [3 * D]),
    tensor(`${p}self_attention.dense.weight`, [D, D]),
    tensor(`${p}self_attention.dense.bias`, [D]),
    tensor(`${p}mlp.dense_h_to_4h.weight`, [FFN, D]),
    tensor(`${p}mlp.dense_h_to_4h.bias`, [FFN]),
    tensor(`${p}mlp.dense_4h_to_h.weight`, [D, FFN]),
    tensor(`${p}mlp.dense_4h_to_h.bias`, [D]),
    tensor("transformer.ln_f.weight", [D], () => 1),
    tensor("transformer.ln_f.bias", [D]),
  ]);
  return { cycle, tokenizer };
}

/** A keras-hub style tokenizer directory (assets/tokenizer/) with the GPT-2 vocabulary. */
export function writeKerasTokenizer(dir: string): FalconTokenizer {
  writeKerasPreset(dir, gpt2Vocabulary());
  return FalconTokenizer.fromPreset(dir);
}

/**
 * A small random Falcon checkpoint (rotary, 2 layers) with the real GPT-2 tokenizer: prompts lead to
 * different continuations and sampling spreads over many tokens (weights of a few tenths, so logits
 * differ by units), for tests where outputs must depend on the prompt and the sampler.
 */
export function writeRandomTextCheckpoint(dir: string, seed = 1): FalconTokenizer {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(hfTokenizerJson(gpt2Vocabulary(), "pair")));
  const D = HIDDEN;
  const layers = 2;
  writeFileSync(join(dir, "config.json"), JSON.stringify({
    architectures: ["FalconForCausalLM"], model_type: "falcon", alibi: false, bias: false, multi_query: true,
    new_decoder_architecture: false, parallel_attn: true, num_attention_heads: 4, num_hidden_layers: layers,
    hidden_size: D, vocab_size: MODEL_VOCABULARY, layer_norm_epsilon: 1e-5, max_position_embeddings: 512,
    tie_word_embeddings: true, bos_token_id: END_OF_TEXT_ID, eos_token_id: END_OF_TEXT_ID, torch_dtype: "float32",
  }, null, 2));
  const random = seededRandom(seed);
  const uniform = (scale: number) => () => (random() * 2 - 1) * scale;
  const head = D / 4;
  const tensors = [tensor("transformer.word_embeddings.weight", [MODEL_VOCABULARY, D], uniform(1))];
  for (let layer = 0; layer < layers; layer++) {
    const p = `transformer.h.${layer}.`;
    tensors.push(
      tensor(`${p}input_layernorm.weight`, [D], () => 1),
      tensor(`${p}input_layernorm.bias`, [D]),
      tensor(`${p}self_attention.query_key_value.weight`, [D + 2 * head, D], uniform(0.3)),
      tensor(`${p}self_attention.dense.weight`, [D, D], uniform(0.3)),
      tensor(`${p}mlp.dense_h_to_4h.weight`, [4 * D, D], uniform(0.3)),
      tensor(`${p}mlp.dense_4h_to_h.weight`, [D, 4 * D], uniform(0.3)),
    );
  }
  tensors.push(tensor("transformer.ln_f.weight", [D], () => 1), tensor("transformer.ln_f.bias", [D]));
  writeSafetensors(join(dir, "model.safetensors"), tensors);
  return FalconTokenizer.fromPreset(dir);
}
