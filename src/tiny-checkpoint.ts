/**
 * A tiny text-generation checkpoint made from this file alone (`falcon-native run --save DIR`), so
 * that generate, inspect, serve and `FalconCausalLM.fromPreset` can be tried without Python or a
 * download. It is a Hugging Face Falcon checkpoint (config.json, generation_config.json,
 * model.safetensors) with a byte-level BPE tokenizer.json and a tokenizer_config.json carrying the
 * Falcon chat template.
 *
 * Tokenizer: the 256 byte tokens, then BPE merges learned from TINY_CORPUS (GPT-2's pre-tokenization,
 * most frequent pair first, ties broken by the pair's text), then `<|endoftext|>`.
 *
 * Model: a bigram language model of TINY_CORPUS written as Falcon weights. Embeddings are one-hot
 * (token k → dimension k); attention and MLP weights are zero, so the final hidden state is the layer
 * norm of that one-hot vector, (e_k − 1/D) / σ with the same σ for every k. Each head row sums to
 * zero (a spare dimension holds minus the others' sum), so the mean term vanishes and the logit of
 * token t after token k is exactly lm_head[t][k] / σ = log P(t | k): counts of the pair in the corpus
 * interpolated with the unigram distribution. Greedy decoding follows the corpus's likeliest next
 * token; sampling wanders through its phrases. Everything is deterministic: the files are the same
 * bytes on every run and machine.
 */
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";

import { DEFAULT_CHAT_TEMPLATE } from "./chat-template.js";
import { FalconPresetError } from "./errors.js";
import { writeSafetensors, type TensorToWrite } from "./presets/safetensors-writer.js";
import { BYTE_TO_UNICODE, FalconTokenizer } from "./tokenizer.js";

/** The text the tokenizer's merges and the model's bigrams are learned from; paragraphs end with the end token. */
export const TINY_CORPUS: readonly string[] = [
  "The falcon is a bird of prey. The falcon has long pointed wings and a short hooked beak. It flies fast and it sees far.",
  "The peregrine falcon is the fastest animal on the planet. When it dives for its prey, the peregrine falcon can reach more than three hundred kilometres an hour.",
  "Falcons nest on cliff ledges, on tall buildings and in the old nests of other birds. A falcon does not build a nest of its own.",
  "The female falcon lays three or four eggs in the spring. Both parents feed the young birds until they can fly and hunt on their own.",
  "Falcons hunt other birds in the open sky. A falcon strikes its prey in the air with its feet and then carries it to a high perch.",
  "People have trained falcons to hunt for thousands of years. The sport is called falconry, and the hunter who keeps the birds is called a falconer.",
  "The kestrel is a small falcon that hovers over fields while it looks for mice and insects in the grass below.",
  "User: Where do falcons nest?\nFalcon: Falcons nest on cliff ledges and on tall buildings in the city.",
  "User: How fast is the peregrine falcon?\nFalcon: The peregrine falcon is the fastest bird in the world when it dives.",
  "User: What does a falcon eat?\nFalcon: A falcon eats other birds, mice and insects that it catches in the air or on the ground.",
];

export const END_OF_TEXT = "<|endoftext|>";

/** At most this many merges, so the vocabulary and the one-hot hidden size stay small (hidden 512). */
const MAX_MERGES = 192;
/** Weight of the unigram distribution in each row's interpolation, in corpus counts. */
const UNIGRAM_WEIGHT = 1;
/** Added to every token's count in the unigram distribution, so no logit is minus infinity. */
const UNIGRAM_FLOOR = 1e-3;
const HEAD_SIZE = 64;
const FFN_SIZE = 64;
const LAYER_NORM_EPSILON = 1e-5;

const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export interface TinyVocabulary {
  /** Token (in GPT-2's byte-to-unicode alphabet) → id: bytes 0..255, merged tokens, then the end token. */
  vocabulary: Map<string, number>;
  /** Merges in priority order. */
  merges: [string, string][];
  endTokenId: number;
}

/** BPE on TINY_CORPUS: repeatedly merge the most frequent adjacent pair within a pre-tokenized word. */
export function learnTinyVocabulary(): TinyVocabulary {
  const wordCounts = new Map<string, number>();
  for (const paragraph of TINY_CORPUS) {
    for (const [word] of paragraph.matchAll(GPT2_SPLIT)) {
      const symbols = Array.from(Buffer.from(word, "utf8"), (byte) => BYTE_TO_UNICODE[byte]!).join(" ");
      wordCounts.set(symbols, (wordCounts.get(symbols) ?? 0) + 1);
    }
  }
  let words = [...wordCounts].map(([symbols, count]) => ({ symbols: symbols.split(" "), count }));
  const vocabulary = new Map<string, number>(BYTE_TO_UNICODE.map((symbol, byte) => [symbol, byte]));
  const merges: [string, string][] = [];
  while (merges.length < MAX_MERGES) {
    const pairCounts = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairCounts.set(key, (pairCounts.get(key) ?? 0) + count);
      }
    }
    let best: [string, number] | undefined;
    for (const entry of pairCounts) {
      if (!best || entry[1] > best[1] || (entry[1] === best[1] && entry[0] < best[0])) best = entry;
    }
    if (!best || best[1] < 2) break;
    const [left, right] = best[0].split(" ") as [string, string];
    merges.push([left, right]);
    if (!vocabulary.has(left + right)) vocabulary.set(left + right, vocabulary.size);
    words = words.map(({ symbols, count }) => {
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (symbols[i] === left && symbols[i + 1] === right) {
          merged.push(left + right);
          i++;
        } else {
          merged.push(symbols[i]!);
        }
      }
      return { symbols: merged, count };
    });
  }
  const endTokenId = vocabulary.size;
  vocabulary.set(END_OF_TEXT, endTokenId);
  return { vocabulary, merges, endTokenId };
}

/** tokenizer.json in the layout of GPT-2's on the Hub: byte-level pre-tokenizer, BPE model, the end token added. */
function tokenizerJson({ vocabulary, merges, endTokenId }: TinyVocabulary): object {
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [{ id: endTokenId, content: END_OF_TEXT, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "",
      fuse_unk: false, byte_fallback: false, vocab: Object.fromEntries(vocabulary), merges,
    },
  };
}

/** log P(next | previous) for every pair of the tokenizer's ids: corpus bigram counts interpolated with unigrams. */
export function tinyBigramLogProbabilities(tokenizer: FalconTokenizer, tokens: number): Float64Array[] {
  const endTokenId = tokens - 1;
  const pairs = Array.from({ length: tokens }, () => new Float64Array(tokens));
  const unigram = new Float64Array(tokens).fill(UNIGRAM_FLOOR);
  let previous = endTokenId;
  for (const paragraph of TINY_CORPUS) {
    for (const id of [...tokenizer.encode(paragraph), endTokenId]) {
      pairs[previous]![id]! += 1;
      unigram[id]! += 1;
      previous = id;
    }
  }
  const unigramTotal = unigram.reduce((a, b) => a + b, 0);
  return pairs.map((row) => {
    const rowTotal = row.reduce((a, b) => a + b, 0);
    return row.map((count, id) => Math.log((count + (UNIGRAM_WEIGHT * unigram[id]!) / unigramTotal) / (rowTotal + UNIGRAM_WEIGHT)));
  });
}

interface Tensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** A float32 tensor as the writer streams it. */
function float32Tensor({ name, shape, data }: Tensor): TensorToWrite {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { name, dtype: "F32", shape, byteLength: bytes.byteLength, fill: (out, offset) => out.set(bytes.subarray(offset, offset + out.byteLength)) };
}

/** The files written, for the CLI's report. */
export interface TinyCheckpointSummary {
  directory: string;
  files: string[];
  tokenizerVocabulary: number;
  hiddenDim: number;
}

/**
 * Writes the tiny checkpoint into `directory` (created if missing). Throws FalconPresetError when it
 * exists and is not an empty directory: nothing of someone's is overwritten.
 */
export function writeTinyCheckpoint(directory: string): TinyCheckpointSummary {
  try {
    if (existsSync(directory)) {
      if (!statSync(directory).isDirectory()) throw new FalconPresetError(`${directory}: exists and is not a directory`);
      if (readdirSync(directory).length > 0) throw new FalconPresetError(`${directory}: directory is not empty; give a new or empty directory`);
    }
    mkdirSync(directory, { recursive: true });
    return writeFiles(directory);
  } catch (error) {
    if (error instanceof FalconPresetError) throw error;
    throw new FalconPresetError(`${directory}: cannot write the checkpoint: ${(error as Error).message}`, { cause: error });
  }
}

function writeFiles(directory: string): TinyCheckpointSummary {
  const vocab = learnTinyVocabulary();
  const tokens = vocab.vocabulary.size;
  writeFileSync(path.join(directory, "tokenizer.json"), `${JSON.stringify(tokenizerJson(vocab), null, 2)}\n`);
  writeFileSync(path.join(directory, "tokenizer_config.json"), `${JSON.stringify({
    tokenizer_class: "PreTrainedTokenizerFast", bos_token: END_OF_TEXT, eos_token: END_OF_TEXT,
    model_max_length: 1024, clean_up_tokenization_spaces: false, chat_template: DEFAULT_CHAT_TEMPLATE,
  }, null, 2)}\n`);
  // The bigrams are counted on the tokenizer as it will be loaded, so the model and its tokenizer agree.
  const tokenizer = FalconTokenizer.fromPreset(directory);
  const logProbabilities = tinyBigramLogProbabilities(tokenizer, tokens);

  const hidden = Math.ceil((tokens + 1) / HEAD_SIZE) * HEAD_SIZE;  // one spare dimension at least
  const heads = hidden / HEAD_SIZE;
  const spare = tokens;
  const sigma = Math.sqrt(1 / hidden - 1 / hidden ** 2 + LAYER_NORM_EPSILON);
  const embeddings = new Float32Array(tokens * hidden);
  for (let id = 0; id < tokens; id++) embeddings[id * hidden + id] = 1;
  const head = new Float32Array(tokens * hidden);
  for (let next = 0; next < tokens; next++) {
    let sum = 0;
    for (let previous = 0; previous < tokens; previous++) {
      const value = Math.fround(sigma * logProbabilities[previous]![next]!);
      head[next * hidden + previous] = value;
      sum += value;
    }
    head[next * hidden + spare] = -sum;
  }
  const zeros = (name: string, ...shape: number[]): Tensor => ({ name, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
  const ones = (name: string, size: number): Tensor => ({ name, shape: [size], data: new Float32Array(size).fill(1) });
  const layer = "transformer.h.0.";
  writeSafetensors(path.join(directory, "model.safetensors"), [
    { name: "transformer.word_embeddings.weight", shape: [tokens, hidden], data: embeddings },
    ones(`${layer}input_layernorm.weight`, hidden),
    zeros(`${layer}input_layernorm.bias`, hidden),
    zeros(`${layer}self_attention.query_key_value.weight`, (heads + 2) * HEAD_SIZE, hidden),
    zeros(`${layer}self_attention.dense.weight`, hidden, hidden),
    ones(`${layer}post_attention_layernorm.weight`, hidden),
    zeros(`${layer}post_attention_layernorm.bias`, hidden),
    zeros(`${layer}mlp.dense_h_to_4h.weight`, FFN_SIZE, hidden),
    zeros(`${layer}mlp.dense_4h_to_h.weight`, hidden, FFN_SIZE),
    ones("transformer.ln_f.weight", hidden),
    zeros("transformer.ln_f.bias", hidden),
    { name: "lm_head.weight", shape: [tokens, hidden], data: head },
  ].map(float32Tensor));
  writeFileSync(path.join(directory, "config.json"), `${JSON.stringify({
    architectures: ["FalconForCausalLM"], model_type: "falcon", alibi: true, bias: false, multi_query: true,
    new_decoder_architecture: false, parallel_attn: false, num_attention_heads: heads, num_hidden_layers: 1,
    hidden_size: hidden, ffn_hidden_size: FFN_SIZE, vocab_size: tokens, layer_norm_epsilon: LAYER_NORM_EPSILON,
    tie_word_embeddings: false, bos_token_id: vocab.endTokenId, eos_token_id: vocab.endTokenId, torch_dtype: "float32",
  }, null, 2)}\n`);
  writeFileSync(path.join(directory, "generation_config.json"), `${JSON.stringify({ bos_token_id: vocab.endTokenId, eos_token_id: vocab.endTokenId }, null, 2)}\n`);
  return {
    directory,
    files: ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"],
    tokenizerVocabulary: tokens,
    hiddenDim: hidden,
  };
}
