/**
 * Every Hugging Face fixture case on the default backend: forward runs (right/left padding,
 * attention_mask null, explicit position_ids) against float32 and exact-table float64 references,
 * decode traces step by step, greedy generate records, and the base-model, sharded, bf16 and f16
 * checkpoints (the cases: test/helpers/fixture-suites.ts).
 */
import { hfFixtureSuite } from "./helpers/fixture-suites.js";

hfFixtureSuite();
