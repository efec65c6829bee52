/**
 * Every keras-hub fixture case, every run, every dtype variant, on the default backend: backbone outputs
 * and tied-head logits at valid positions, and incremental decoding through the KV cache against
 * full_logits (the cases: test/helpers/fixture-suites.ts).
 */
import { kerasFixtureSuite } from "./helpers/fixture-suites.js";

kerasFixtureSuite();
