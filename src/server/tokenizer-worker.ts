/**
 * The tokenizer in a worker thread (tokenizer-pool.ts): byte-level BPE over a long run with no
 * pre-token boundary (a megabyte of one letter) takes seconds, and must cost only this thread.
 * Errors are answered as messages, never thrown across.
 */
import { parentPort, workerData } from "node:worker_threads";

import { FalconTokenizer, type TokenizerDefinition } from "../tokenizer.js";
import type { TokenizeRequest, TokenizeResponse } from "./tokenizer-pool.js";

const port = parentPort!;
const tokenizer = FalconTokenizer.fromDefinition(workerData as TokenizerDefinition);

port.on("message", ({ id, text, maxTokens }: TokenizeRequest) => {
  let response: TokenizeResponse;
  try {
    const ids = tokenizer.encodePrefix(text, maxTokens);
    response = { id, ids };
  } catch (error) {
    response = { id, error: error instanceof Error ? error.message : String(error) };
  }
  port.postMessage(response, "ids" in response ? [response.ids.buffer as ArrayBuffer] : []);
});
