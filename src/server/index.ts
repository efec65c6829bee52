/**
 * createServer() as the package exports it. The options are checked at once; the HTTP stack (Fastify,
 * prom-client) is loaded only when a server is made, so `import "falcon-native"` does not pay for it.
 */
import type { FalconCausalLM } from "../causal-lm.js";
import { checkServerOptions, type FalconServer, type ServerOptions } from "./options.js";

/**
 * An OpenAI-compatible server for `lm` (or for the model a promise resolves to: the server can listen
 * while it loads). See ServerOptions; `listen()` starts it.
 */
export function createServer(lm: FalconCausalLM | Promise<FalconCausalLM>, options: ServerOptions = {}): FalconServer {
  checkServerOptions(options);
  const made = import("./server.js").then((module) => module.createServer(lm, options));
  let server: FalconServer | undefined;
  made.then((value) => (server = value), () => undefined);
  const ready = made.then((value) => value.ready);
  // Awaiting ready is optional: a failed load is also what /health and every request report.
  ready.catch(() => undefined);
  return {
    get engine() {
      return server?.engine;
    },
    ready,
    listen: async (listenOptions) => (await made).listen(listenOptions),
    close: async (closeOptions) => (await made).close(closeOptions),
  };
}
