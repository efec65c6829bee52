/**
 * Builds the real GPT-2 byte-level BPE vocabulary and merges (the Falcon-RW tokenizer) from the
 * `r50k_base` ranks shipped with js-tiktoken, because no GPT-2 vocabulary file is on disk and tests
 * cannot reach the network. Everything is written under os.tmpdir(); nothing is cached in the repo.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import r50kBase from "js-tiktoken/ranks/r50k_base";
import { BYTE_TO_UNICODE } from "../../src/tokenizer.js";

export const END_OF_TEXT = "<|endoftext|>";
export const END_OF_TEXT_ID = 50256;

/** A merge rule "left right": the two tokens that BPE joins into one. */
export type Merge = readonly [left: string, right: string];

export interface Gpt2Vocabulary {
  /** Token (in the GPT-2 byte-to-unicode alphabet) → id, in id order, `<|endoftext|>` last. */
  readonly vocabulary: Record<string, number>;
  /** Merges in priority order (merge i creates token id 256 + i). */
  readonly merges: readonly Merge[];
}


/** Decodes js-tiktoken's packed rank table ("! <offset> <base64 token> <base64 token> ..." lines). */
function readTiktokenRanks(): Uint8Array[] {
  const tokensByRank: Uint8Array[] = [];
  for (const line of r50kBase.bpe_ranks.split("\n")) {
    if (line === "") continue;
    const [, offsetText, ...base64Tokens] = line.split(" ");
    const offset = Number.parseInt(offsetText ?? "", 10);
    base64Tokens.forEach((base64Token, index) => {
      tokensByRank[offset + index] = new Uint8Array(Buffer.from(base64Token, "base64"));
    });
  }
  return tokensByRank;
}

/**
 * Recovers the merge that creates each multi-byte token: run BPE on the token's own symbols allowing
 * only tokens of lower rank (they existed before it); what is left must be exactly two parts, and
 * those two are the merge. Ranks of GPT-2 are its ids, so sorting merges by the rank of the token they
 * create gives merges.txt order. Each token costs O(length²) map look-ups, about a second for all 50k.
 */
function recoverMerges(tokensByRank: readonly string[]): Merge[] {
  const rankByToken = new Map<string, number>();
  tokensByRank.forEach((token, rank) => rankByToken.set(token, rank));
  const merges: Merge[] = [];
  tokensByRank.forEach((token, rank) => {
    if (token.length < 2) return;
    const parts = Array.from(token);
    while (parts.length > 2) {
      let bestRank = rank;
      let bestIndex = -1;
      for (let i = 0; i + 1 < parts.length; i++) {
        const pairRank = rankByToken.get(parts[i]! + parts[i + 1]!);
        if (pairRank !== undefined && pairRank < bestRank) {
          bestRank = pairRank;
          bestIndex = i;
        }
      }
      if (bestIndex < 0) break;
      parts.splice(bestIndex, 2, parts[bestIndex]! + parts[bestIndex + 1]!);
    }
    if (parts.length !== 2) {
      throw new Error(`token of rank ${rank} is not reachable by one merge of lower-rank tokens`);
    }
    merges.push([parts[0]!, parts[1]!]);
  });
  return merges;
}

let cachedVocabulary: Gpt2Vocabulary | undefined;

/** The GPT-2 vocabulary and merges, built once per process. */
export function gpt2Vocabulary(): Gpt2Vocabulary {
  if (cachedVocabulary) return cachedVocabulary;
  const byteToUnicode = BYTE_TO_UNICODE;
  const tokensByRank = readTiktokenRanks().map((bytes) => Array.from(bytes, (byte) => byteToUnicode[byte]!).join(""));
  const vocabulary: Record<string, number> = {};
  tokensByRank.forEach((token, rank) => {
    vocabulary[token] = rank;
  });
  vocabulary[END_OF_TEXT] = END_OF_TEXT_ID;
  cachedVocabulary = { vocabulary, merges: recoverMerges(tokensByRank) };
  return cachedVocabulary;
}

/** A fresh empty directory under the OS temp dir. */
export function makeTempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** merges.txt as GPT-2 and keras-hub ship it: a `#version` header, one "left right" per line, trailing newline. */
export function mergesText(merges: readonly Merge[], options: { versionHeader?: boolean } = {}): string {
  const header = options.versionHeader === false ? "" : "#version: 0.2\n";
  return header + merges.map(([left, right]) => `${left} ${right}\n`).join("");
}

/**
 * Writes a keras-hub style preset: the serialized Keras FalconTokenizer config as `tokenizer.json`
 * (no vocabulary inside) and the vocabulary and merges under `assets/tokenizer/`.
 */
export function writeKerasPreset(presetDir: string, vocab: Gpt2Vocabulary): void {
  const assetsDir = join(presetDir, "assets", "tokenizer");
  mkdirSync(assetsDir, { recursive: true });
  writeFileSync(join(assetsDir, "vocabulary.json"), JSON.stringify(vocab.vocabulary));
  writeFileSync(join(assetsDir, "merges.txt"), mergesText(vocab.merges));
  const kerasTokenizerConfig = {
    module: "keras_hub.src.models.falcon.falcon_tokenizer",
    class_name: "FalconTokenizer",
    config: {
      name: "falcon_tokenizer",
      trainable: true,
      dtype: { module: "keras", class_name: "DTypePolicy", config: { name: "int32" }, registered_name: null },
      config_file: "tokenizer.json",
      sequence_length: null,
      add_prefix_space: false,
      unsplittable_tokens: [END_OF_TEXT],
    },
    registered_name: "keras_hub>FalconTokenizer",
  };
  writeFileSync(join(presetDir, "tokenizer.json"), JSON.stringify(kerasTokenizerConfig, null, 4));
}

/**
 * An HF `tokenizer.json` laid out like the GPT-2 / falcon-rw-1b one on the Hub. Older `tokenizers`
 * releases store merges as "a b" strings, newer ones as ["a", "b"] pairs.
 */
export function hfTokenizerJson(vocab: Gpt2Vocabulary, mergeEncoding: "string" | "pair"): object {
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [
      {
        id: vocab.vocabulary[END_OF_TEXT],
        content: END_OF_TEXT,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: true,
        special: true,
      },
    ],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, add_prefix_space: true, trim_offsets: false },
    decoder: { ...byteLevel, add_prefix_space: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      vocab: vocab.vocabulary,
      merges: vocab.merges.map(([left, right]) => (mergeEncoding === "string" ? `${left} ${right}` : [left, right])),
    },
  };
}
