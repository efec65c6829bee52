/**
 * The model files of `npm run bench:serve`: both servers load falcon-native's random model, so both
 * need a tokenizer, and both get the real GPT-2 byte-level BPE vocabulary (falcon-rw-1b's, built
 * offline from js-tiktoken by test/helpers/gpt2-vocab.ts): llama-server from the GGUF's
 * tokenizer.ggml.* metadata, ours from a keras-hub preset's tokenizer assets.
 */
import { existsSync, renameSync, rmSync } from "node:fs";

import type { FalconBackbone } from "../src/index.js";
import { END_OF_TEXT, gpt2Vocabulary, writeKerasPreset as writeKerasTokenizer } from "../test/helpers/gpt2-vocab.js";
import type { GgufVocabulary } from "./gguf.js";

/** llama_token_type values. */
const TOKEN_TYPE = { NORMAL: 1, CONTROL: 3, UNUSED: 5 } as const;

/**
 * GPT-2's 50257 tokens in id order, `<|endoftext|>` a control token used as BOS and EOS, then the
 * model's padded rows as unused `[PAD<id>]` tokens (what llama.cpp's converter writes for a vocabulary
 * smaller than the embedding), so the GGUF has one token per embedding row.
 */
export function gpt2GgufVocabulary(modelVocabularySize: number): GgufVocabulary {
  const { vocabulary, merges } = gpt2Vocabulary();
  const tokens: string[] = [];
  for (const [token, id] of Object.entries(vocabulary)) tokens[id] = token;
  if (tokens.length > modelVocabularySize) {
    throw new Error(`GPT-2's vocabulary has ${tokens.length} tokens, more than the model's ${modelVocabularySize} rows`);
  }
  const tokenTypes = new Int32Array(modelVocabularySize).fill(TOKEN_TYPE.NORMAL);
  const eosId = vocabulary[END_OF_TEXT]!;
  tokenTypes[eosId] = TOKEN_TYPE.CONTROL;
  for (let id = tokens.length; id < modelVocabularySize; id++) {
    tokens[id] = `[PAD${id}]`;
    tokenTypes[id] = TOKEN_TYPE.UNUSED;
  }
  return { tokens, tokenTypes, merges: merges.map(([left, right]) => `${left} ${right}`), eosId, pre: "gpt-2" };
}

/** Prompt ids the load generator may draw: GPT-2's ordinary tokens, below `<|endoftext|>`. */
export const GPT2_ORDINARY_TOKENS = 50256;

/**
 * Writes `backbone` as a keras-hub preset with GPT-2's tokenizer into `directory` (through a
 * `.partial` sibling renamed at the end, so an interrupted write never looks like a preset).
 */
export async function writeServePreset(backbone: FalconBackbone, directory: string): Promise<void> {
  const partial = `${directory}.partial`;
  rmSync(partial, { recursive: true, force: true });
  await backbone.saveToPreset(partial);
  writeKerasTokenizer(partial, gpt2Vocabulary());
  if (existsSync(directory)) rmSync(directory, { recursive: true, force: true });
  renameSync(partial, directory);
}
