/**
 * The server's Prometheus metrics (prom-client), in a registry of its own so two servers in one
 * process never share counters. Engine gauges are read from engine.stats() when scraped.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

import type { EngineStats } from "../engine/engine.js";

/** Seconds: from a millisecond time-to-first-token on a fast CPU model to a long queue wait. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const INTER_TOKEN_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5];

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: "falcon_requests_total", help: "HTTP requests by endpoint and status code",
    labelNames: ["endpoint", "status"] as const, registers: [this.registry],
  });
  readonly promptTokens = new Counter({ name: "falcon_prompt_tokens_total", help: "Prompt tokens of admitted requests", registers: [this.registry] });
  readonly generationTokens = new Counter({ name: "falcon_generation_tokens_total", help: "Tokens generated", registers: [this.registry] });
  readonly timeToFirstToken = new Histogram({
    name: "falcon_time_to_first_token_seconds", help: "From a request's arrival to its first generated token",
    buckets: LATENCY_BUCKETS, registers: [this.registry],
  });
  readonly interTokenLatency = new Histogram({
    name: "falcon_inter_token_latency_seconds", help: "Between consecutive tokens of one sequence",
    buckets: INTER_TOKEN_BUCKETS, registers: [this.registry],
  });
  readonly requestDuration = new Histogram({
    name: "falcon_request_duration_seconds", help: "From a generation request's arrival to its last byte",
    buckets: LATENCY_BUCKETS, registers: [this.registry],
  });

  /** `stats` answers undefined while the model loads (the gauges then read 0). */
  constructor(stats: () => EngineStats | undefined) {
    const registers = [this.registry];
    const promptTokens = this.promptTokens;
    new Gauge({
      name: "falcon_queue_depth", help: "Sequences waiting for the engine (not yet admitted, or preempted)", registers,
      collect() { this.set(stats()?.waiting ?? 0); },
    });
    new Gauge({
      name: "falcon_running_sequences", help: "Sequences the engine is running", registers,
      collect() { this.set(stats()?.running ?? 0); },
    });
    new Gauge({
      name: "falcon_kv_blocks", help: "KV cache blocks of 16 tokens: used by running sequences, cached prefixes, free",
      labelNames: ["state"] as const, registers,
      collect() {
        const blocks = stats()?.kvBlocks ?? { used: 0, cached: 0, free: 0 };
        this.set({ state: "used" }, blocks.used);
        this.set({ state: "cached" }, blocks.cached);
        this.set({ state: "free" }, blocks.free);
      },
    });
    new Gauge({
      name: "falcon_prefix_cache_hit_rate", help: "Prompt tokens served from the prefix cache / prompt tokens admitted", registers,
      async collect() {
        const admitted = (await promptTokens.get()).values[0]?.value ?? 0;
        this.set(admitted === 0 ? 0 : (stats()?.prefixHitTokens ?? 0) / admitted);
      },
    });
    new Gauge({
      name: "falcon_preemptions", help: "Sequences sent back to wait when the KV pool ran out (since start)", registers,
      collect() { this.set(stats()?.preemptions ?? 0); },
    });
    collectDefaultMetrics({ register: this.registry, prefix: "falcon_" });
  }
}
