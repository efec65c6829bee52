import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { FalconPresetError } from "../src/errors.js";
import {
  type HubDownloadProgress,
  isRemoteHandle,
  resolveHfHandle,
  resolveKaggleHandle,
  resolvePresetHandle,
} from "../src/presets/hub.js";
import { makeTempDir } from "./helpers/gpt2-vocab.js";

const tempRoot = makeTempDir("falcon-hub-test-");
after(() => rmSync(tempRoot, { recursive: true, force: true }));
let tempCount = 0;
function freshDir(label: string): string {
  const dir = join(tempRoot, `${label}-${tempCount++}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

const COMMIT = "0123456789abcdef0123456789abcdef01234567";
const SHARDED_REPO = "acme/falcon-tiny";
const SINGLE_FILE_REPO = "acme/falcon-single";
const PRIVATE_REPO = "acme/falcon-private";
const GGUF_REPO = "acme/falcon-gguf";
const GGUF_FILE = "quantised/falcon-tiny.Q4_K_M.gguf";
const GOOD_TOKEN = "hf_test_token";
const SHARD_1 = "model-00001-of-00002.safetensors";
const SHARD_2 = "model-00002-of-00002.safetensors";

function sha256(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** The git blob hash, which the Hub sends as the ETag of files not stored in LFS. */
function gitBlobSha1(bytes: Buffer): string {
  return createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex");
}

const configJson = Buffer.from(JSON.stringify({ model_type: "falcon", hidden_size: 64, num_hidden_layers: 2 }));
const shardBytes = new Map<string, Buffer>([
  [SHARD_1, randomBytes(1_500_000)],
  [SHARD_2, randomBytes(2_500_000)],
]);
const singleWeights = randomBytes(1_200_000);
const indexJson = Buffer.from(
  JSON.stringify({
    metadata: { total_size: 4_000_000 },
    weight_map: { "h.0.weight": SHARD_1, "h.1.weight": SHARD_2, "ln_f.weight": SHARD_2 },
  }),
);
const tokenizerJson = Buffer.from(JSON.stringify({ model: { type: "BPE", vocab: {}, merges: [] } }));
const chatTemplateJinja = Buffer.from("{% for message in messages %}{{ message['content'] }}{% endfor %}");

const ggufBytes = randomBytes(900_000);

const REPOS = new Map<string, Map<string, Buffer>>([
  [
    GGUF_REPO,
    new Map([
      ["config.json", configJson],
      [GGUF_FILE, ggufBytes],
      ["falcon-tiny.Q8_0.gguf", randomBytes(1000)],
    ]),
  ],
  [
    SHARDED_REPO,
    new Map([
      ["config.json", configJson],
      ["model.safetensors.index.json", indexJson],
      [SHARD_1, shardBytes.get(SHARD_1)!],
      [SHARD_2, shardBytes.get(SHARD_2)!],
      ["tokenizer.json", tokenizerJson],
      ["chat_template.jinja", chatTemplateJinja],
    ]),
  ],
  [
    SINGLE_FILE_REPO,
    new Map([
      ["config.json", configJson],
      ["model.safetensors", singleWeights],
    ]),
  ],
  [
    PRIVATE_REPO,
    new Map([
      ["config.json", configJson],
      ["model.safetensors", singleWeights],
    ]),
  ],
]);

interface LoggedRequest {
  method: string;
  path: string;
  range: string | undefined;
  authorization: string | undefined;
}

interface FakeHubBehaviour {
  /** The first GET of this file sends this many bytes, then the connection drops. */
  dropOnce?: { file: string; afterBytes: number };
  /** This file is always served with one byte flipped, under its true sha256. */
  corruptFile?: string;
  /** Answer range requests with the whole file (200), as some servers do. */
  ignoreRange?: boolean;
  /** Redirect LFS files to this server (another origin) instead of this one's /cdn/ path. */
  cdnEndpoint?: string;
}

interface FakeHub {
  endpoint: string;
  requests: LoggedRequest[];
  close(): Promise<void>;
}

/**
 * A loopback server answering like huggingface.co: `/<repo>/resolve/<revision>/<file>`, LFS files
 * (*.safetensors) redirected to a CDN path on the same server, with X-Repo-Commit, X-Linked-ETag,
 * X-Linked-Size and Range support.
 */
async function startFakeHub(behaviour: FakeHubBehaviour = {}): Promise<FakeHub> {
  const requests: LoggedRequest[] = [];
  const blobsBySha = new Map<string, { file: string; bytes: Buffer }>();
  for (const files of REPOS.values()) {
    for (const [file, bytes] of files) blobsBySha.set(sha256(bytes), { file, bytes });
  }
  let dropPending = behaviour.dropOnce !== undefined;

  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://localhost");
    requests.push({
      method: request.method ?? "",
      path: url.pathname,
      range: request.headers.range,
      authorization: request.headers.authorization,
    });
    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(url.pathname);
    if (cdn) {
      serveBlob(request, response, blobsBySha.get(cdn[1]!));
      return;
    }
    const resolve = /^\/([\w.-]+\/[\w.-]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const files = resolve ? REPOS.get(resolve[1]!) : undefined;
    const revision = resolve ? decodeURIComponent(resolve[2]!) : "";
    if (!resolve || !files || (revision !== "main" && revision !== COMMIT)) {
      response.writeHead(404, { "x-error-code": "RepoNotFound" }).end();
      return;
    }
    if (resolve[1] === PRIVATE_REPO && request.headers.authorization !== `Bearer ${GOOD_TOKEN}`) {
      response.writeHead(401, { "x-error-message": "Invalid credentials" }).end();
      return;
    }
    const file = decodeURIComponent(resolve[3]!);
    const bytes = files.get(file);
    if (!bytes) {
      response.writeHead(404, { "x-error-code": "EntryNotFound", "x-repo-commit": COMMIT }).end();
      return;
    }
    if (file.endsWith(".safetensors") || file.endsWith(".gguf")) {
      const sha = sha256(bytes);
      response
        .writeHead(302, {
          location: `${behaviour.cdnEndpoint ?? ""}/cdn/${sha}`,
          "x-repo-commit": COMMIT,
          "x-linked-etag": `"${sha}"`,
          "x-linked-size": String(bytes.length),
        })
        .end();
      return;
    }
    response.writeHead(200, {
      "content-length": bytes.length,
      etag: `"${gitBlobSha1(bytes)}"`,
      "x-repo-commit": COMMIT,
    });
    response.end(bytes);
  });

  function serveBlob(
    request: http.IncomingMessage,
    response: http.ServerResponse,
    blob: { file: string; bytes: Buffer } | undefined,
  ): void {
    if (!blob) {
      response.writeHead(404).end();
      return;
    }
    let bytes = blob.bytes;
    if (blob.file === behaviour.corruptFile) {
      bytes = Buffer.from(bytes);
      bytes[bytes.length >> 1] ^= 0xff;
    }
    const range = behaviour.ignoreRange ? null : /^bytes=(\d+)-$/.exec(request.headers.range ?? "");
    const start = range ? Number(range[1]) : 0;
    if (start >= bytes.length && range) {
      response.writeHead(416, { "content-range": `bytes */${bytes.length}` }).end();
      return;
    }
    const headers: http.OutgoingHttpHeaders = { "content-length": bytes.length - start, etag: '"s3-style-etag"' };
    if (range) headers["content-range"] = `bytes ${start}-${bytes.length - 1}/${bytes.length}`;
    response.writeHead(range ? 206 : 200, headers);
    if (request.method === "HEAD") {
      response.end();
      return;
    }
    if (dropPending && behaviour.dropOnce?.file === blob.file) {
      dropPending = false;
      const afterBytes = behaviour.dropOnce.afterBytes;
      // The pause lets the client take in every byte sent before the connection drops.
      response.write(bytes.subarray(start, start + afterBytes), () => {
        setTimeout(() => response.socket?.destroy(), 100);
      });
      return;
    }
    response.end(bytes.subarray(start));
  }

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function snapshotPath(cacheDir: string, repoId: string, commit = COMMIT): string {
  return join(cacheDir, `models--${repoId.replace("/", "--")}`, "snapshots", commit);
}

function fileSha256(file: string): string {
  return sha256(readFileSync(file));
}

function listBlobs(cacheDir: string, repoId: string): string[] {
  const blobsDir = join(cacheDir, `models--${repoId.replace("/", "--")}`, "blobs");
  return existsSync(blobsDir) ? readdirSync(blobsDir) : [];
}

async function rejectsWithPresetError(promise: Promise<unknown>, pattern: RegExp): Promise<FalconPresetError> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof FalconPresetError, `expected a FalconPresetError, got ${String(caught)}`);
  assert.match(caught.message, pattern);
  return caught;
}

const quiet = { progressBar: false } as const;

describe("resolveHfHandle", () => {
  it("downloads a sharded repository into the huggingface_hub cache layout, then resolves it with no network", async () => {
    const hub = await startFakeHub();
    const cacheDir = freshDir("hf-cache");
    let snapshot: string;
    try {
      snapshot = await resolveHfHandle(`hf://${SHARDED_REPO}`, { ...quiet, cacheDir, endpoint: hub.endpoint });
    } finally {
      await hub.close();
    }
    const repoDir = join(cacheDir, "models--acme--falcon-tiny");
    assert.equal(snapshot, snapshotPath(cacheDir, SHARDED_REPO));
    assert.equal(readFileSync(join(repoDir, "refs", "main"), "utf8"), COMMIT);
    for (const [shard, bytes] of shardBytes) {
      const link = join(snapshot, shard);
      assert.ok(lstatSync(link).isSymbolicLink(), `${shard} is a symlink into blobs/`);
      assert.equal(readlinkSync(link), join("..", "..", "blobs", sha256(bytes)));
      assert.equal(fileSha256(link), sha256(bytes));
    }
    assert.equal(readlinkSync(join(snapshot, "config.json")), join("..", "..", "blobs", gitBlobSha1(configJson)));
    assert.deepEqual(JSON.parse(readFileSync(join(snapshot, "config.json"), "utf8")), JSON.parse(configJson.toString()));
    assert.ok(existsSync(join(snapshot, "tokenizer.json")));
    assert.deepEqual(readFileSync(join(snapshot, "chat_template.jinja")), chatTemplateJinja);
    assert.ok(!existsSync(join(snapshot, "tokenizer_config.json")), "a 404 on an optional file is skipped");
    assert.ok(!listBlobs(cacheDir, SHARDED_REPO).some((name) => name.endsWith(".incomplete")));
    assert.ok(
      hub.requests.some((request) => request.method === "GET" && request.path === `/cdn/${sha256(shardBytes.get(SHARD_1)!)}`),
      "shards are fetched through the CDN redirect",
    );
    assert.ok(
      hub.requests.some((request) => request.path === `/${SHARDED_REPO}/resolve/${COMMIT}/${SHARD_2}`),
      "files after config.json are fetched at the commit it named",
    );

    // The server is gone: both calls must be answered from the cache alone.
    assert.equal(await resolveHfHandle(`hf://${SHARDED_REPO}`, { ...quiet, cacheDir, endpoint: hub.endpoint }), snapshot);
    assert.equal(
      await resolveHfHandle(`hf://${SHARDED_REPO}@main`, { ...quiet, cacheDir, endpoint: hub.endpoint, offline: true }),
      snapshot,
    );
  });

  it("falls back to a single model.safetensors when the index is 404", async () => {
    const hub = await startFakeHub();
    const cacheDir = freshDir("hf-cache");
    try {
      const snapshot = await resolveHfHandle(`hf://${SINGLE_FILE_REPO}`, { ...quiet, cacheDir, endpoint: hub.endpoint });
      assert.equal(fileSha256(join(snapshot, "model.safetensors")), sha256(singleWeights));
      assert.ok(!existsSync(join(snapshot, "model.safetensors.index.json")));
    } finally {
      await hub.close();
    }
  });

  it("resumes an interrupted download with a Range request and verifies the whole file", async () => {
    const dropAfterBytes = 700_000;
    const hub = await startFakeHub({ dropOnce: { file: SHARD_2, afterBytes: dropAfterBytes } });
    const cacheDir = freshDir("hf-cache");
    const options = { ...quiet, cacheDir, endpoint: hub.endpoint };
    const shardSha = sha256(shardBytes.get(SHARD_2)!);
    try {
      const error = await rejectsWithPresetError(resolveHfHandle(`hf://${SHARDED_REPO}`, options), /resumes on the next try/);
      assert.match(error.message, new RegExp(`/resolve/${COMMIT}/${SHARD_2}`));
      const partialPath = join(cacheDir, "models--acme--falcon-tiny", "blobs", `${shardSha}.incomplete`);
      assert.equal(statSync(partialPath).size, dropAfterBytes);
      assert.ok(!existsSync(join(snapshotPath(cacheDir, SHARDED_REPO), SHARD_2)), "no snapshot link to a partial file");

      const snapshot = await resolveHfHandle(`hf://${SHARDED_REPO}`, options);
      const rangedCdnRequests = hub.requests.filter((request) => request.range !== undefined && request.path.startsWith("/cdn/"));
      assert.deepEqual(
        rangedCdnRequests.map((request) => [request.path, request.range]),
        [[`/cdn/${shardSha}`, `bytes=${dropAfterBytes}-`]],
      );
      assert.equal(fileSha256(join(snapshot, SHARD_2)), shardSha);
      assert.ok(!existsSync(partialPath));
    } finally {
      await hub.close();
    }
  });

  it("starts over when a server answers a range request with the whole file", async () => {
    const hub = await startFakeHub({ dropOnce: { file: SHARD_1, afterBytes: 400_000 }, ignoreRange: true });
    const cacheDir = freshDir("hf-cache");
    const options = { ...quiet, cacheDir, endpoint: hub.endpoint };
    try {
      await rejectsWithPresetError(resolveHfHandle(`hf://${SHARDED_REPO}`, options), /resumes on the next try/);
      const snapshot = await resolveHfHandle(`hf://${SHARDED_REPO}`, options);
      assert.ok(hub.requests.some((request) => request.range === "bytes=400000-"), "a resume was asked for");
      assert.equal(fileSha256(join(snapshot, SHARD_1)), sha256(shardBytes.get(SHARD_1)!));
    } finally {
      await hub.close();
    }
  });

  it("rejects a corrupted file by sha256 and leaves no blob behind", async () => {
    const hub = await startFakeHub({ corruptFile: SHARD_1 });
    const cacheDir = freshDir("hf-cache");
    const expectedSha = sha256(shardBytes.get(SHARD_1)!);
    const corrupted = Buffer.from(shardBytes.get(SHARD_1)!);
    corrupted[corrupted.length >> 1]! ^= 0xff;
    try {
      const error = await rejectsWithPresetError(
        resolveHfHandle(`hf://${SHARDED_REPO}`, { ...quiet, cacheDir, endpoint: hub.endpoint }),
        /sha256/,
      );
      assert.ok(error.message.includes(SHARD_1), "names the file");
      assert.ok(error.message.includes(`expected sha256 ${expectedSha}`), "names the expected hash");
      assert.ok(error.message.includes(`got ${sha256(corrupted)}`), "names the actual hash");
      assert.deepEqual(
        listBlobs(cacheDir, SHARDED_REPO).filter((name) => name.startsWith(expectedSha)),
        [],
        "neither a complete nor a partial blob is left",
      );
      assert.ok(!existsSync(join(snapshotPath(cacheDir, SHARDED_REPO), SHARD_1)));
    } finally {
      await hub.close();
    }
  });

  it("offline with nothing cached says which files are missing, where they go and how to allow downloads", async () => {
    const cacheDir = freshDir("hf-cache");
    const error = await rejectsWithPresetError(
      resolveHfHandle(`hf://${SHARDED_REPO}`, { ...quiet, cacheDir, offline: true }),
      /config\.json.*model\.safetensors/,
    );
    assert.ok(error.message.includes(join(cacheDir, "models--acme--falcon-tiny", "snapshots")));
    assert.ok(error.message.includes(join(cacheDir, "models--acme--falcon-tiny", "refs", "main")));
    assert.match(error.message, /offline: true/);

    const previous = process.env["HF_HUB_OFFLINE"];
    process.env["HF_HUB_OFFLINE"] = "1";
    try {
      await rejectsWithPresetError(
        resolveHfHandle(`hf://${SHARDED_REPO}`, { ...quiet, cacheDir }),
        /unset HF_HUB_OFFLINE/,
      );
    } finally {
      if (previous === undefined) delete process.env["HF_HUB_OFFLINE"];
      else process.env["HF_HUB_OFFLINE"] = previous;
    }
  });

  it("offline with a partly cached snapshot lists exactly the missing shards", async () => {
    const cacheDir = freshDir("hf-cache");
    const snapshot = snapshotPath(cacheDir, SHARDED_REPO);
    mkdirSync(snapshot, { recursive: true });
    mkdirSync(join(cacheDir, "models--acme--falcon-tiny", "refs"));
    writeFileSync(join(cacheDir, "models--acme--falcon-tiny", "refs", "main"), COMMIT);
    writeFileSync(join(snapshot, "config.json"), configJson);
    writeFileSync(join(snapshot, "model.safetensors.index.json"), indexJson);
    writeFileSync(join(snapshot, SHARD_1), shardBytes.get(SHARD_1)!);
    const error = await rejectsWithPresetError(
      resolveHfHandle(`hf://${SHARDED_REPO}`, { ...quiet, cacheDir, offline: true }),
      new RegExp(`Missing: ${SHARD_2}\\. They belong in ${snapshot.replaceAll("\\", "\\\\")}\\.`),
    );
    assert.ok(!error.message.includes(SHARD_1));
  });

  it("explains a 401 with HF_TOKEN, and sends the token as a bearer token", async () => {
    const hub = await startFakeHub();
    const cacheDir = freshDir("hf-cache");
    const previous = process.env["HF_TOKEN"];
    delete process.env["HF_TOKEN"];
    try {
      await rejectsWithPresetError(
        resolveHfHandle(`hf://${PRIVATE_REPO}`, { ...quiet, cacheDir, endpoint: hub.endpoint }),
        /gated or private.*HF_TOKEN/s,
      );
      const snapshot = await resolveHfHandle(`hf://${PRIVATE_REPO}`, {
        ...quiet,
        cacheDir,
        endpoint: hub.endpoint,
        token: GOOD_TOKEN,
      });
      assert.equal(fileSha256(join(snapshot, "model.safetensors")), sha256(singleWeights));
      assert.ok(hub.requests.some((request) => request.authorization === `Bearer ${GOOD_TOKEN}`));
    } finally {
      if (previous !== undefined) process.env["HF_TOKEN"] = previous;
      await hub.close();
    }
  });

  it("sends neither the token nor a HEAD to a CDN on another origin", async () => {
    const cdn = await startFakeHub();
    const hub = await startFakeHub({ cdnEndpoint: cdn.endpoint });
    try {
      const snapshot = await resolveHfHandle(`hf://${PRIVATE_REPO}`, {
        ...quiet,
        cacheDir: freshDir("hf-cache"),
        endpoint: hub.endpoint,
        token: GOOD_TOKEN,
      });
      assert.equal(fileSha256(join(snapshot, "model.safetensors")), sha256(singleWeights));
      assert.deepEqual(
        cdn.requests.map((request) => [request.method, request.path, request.authorization]),
        [["GET", `/cdn/${sha256(singleWeights)}`, undefined]],
      );
    } finally {
      await hub.close();
      await cdn.close();
    }
  });

  it("reports an unknown repository or revision as not found", async () => {
    const hub = await startFakeHub();
    const cacheDir = freshDir("hf-cache");
    try {
      await rejectsWithPresetError(
        resolveHfHandle(`hf://${SHARDED_REPO}@no-such-branch`, { ...quiet, cacheDir, endpoint: hub.endpoint }),
        /repository or revision not found/,
      );
      await rejectsWithPresetError(
        resolveHfHandle("hf://acme/no-such-repo", { ...quiet, cacheDir, endpoint: hub.endpoint }),
        /repository or revision not found/,
      );
    } finally {
      await hub.close();
    }
  });

  it("names the URL and resumability when the server cannot be reached", async () => {
    const hub = await startFakeHub();
    await hub.close();
    await rejectsWithPresetError(
      resolveHfHandle(`hf://${SHARDED_REPO}`, { ...quiet, cacheDir: freshDir("hf-cache"), endpoint: hub.endpoint }),
      new RegExp(`${hub.endpoint}/${SHARDED_REPO}/resolve/main/config\\.json.*resume on the next try`, "s"),
    );
  });

  it("uses snapshots/<commit> directly for a revision pinned by commit hash", async () => {
    const hub = await startFakeHub();
    const cacheDir = freshDir("hf-cache");
    try {
      const snapshot = await resolveHfHandle(`hf://${SINGLE_FILE_REPO}@${COMMIT}`, {
        ...quiet,
        cacheDir,
        endpoint: hub.endpoint,
      });
      assert.equal(snapshot, snapshotPath(cacheDir, SINGLE_FILE_REPO));
      assert.ok(!existsSync(join(cacheDir, "models--acme--falcon-single", "refs")), "a commit needs no ref");
      const resolvePaths = hub.requests.map((request) => request.path).filter((path) => path.includes("/resolve/"));
      assert.ok(resolvePaths.length > 0 && resolvePaths.every((path) => path.includes(`/resolve/${COMMIT}/`)));
    } finally {
      await hub.close();
    }
    assert.equal(
      await resolveHfHandle(`hf://${SINGLE_FILE_REPO}@${COMMIT}`, { ...quiet, cacheDir, offline: true }),
      snapshotPath(cacheDir, SINGLE_FILE_REPO),
    );
  });

  it("reports monotonic progress per file that ends at the file's size", async () => {
    const hub = await startFakeHub();
    const events: HubDownloadProgress[] = [];
    try {
      await resolveHfHandle(`hf://${SHARDED_REPO}`, {
        ...quiet,
        cacheDir: freshDir("hf-cache"),
        endpoint: hub.endpoint,
        onProgress: (progress) => events.push({ ...progress }),
      });
    } finally {
      await hub.close();
    }
    const expectedSizes = new Map([...REPOS.get(SHARDED_REPO)!].map(([file, bytes]) => [file, bytes.length]));
    assert.deepEqual(new Set(events.map((event) => event.file)), new Set(expectedSizes.keys()));
    for (const [file, size] of expectedSizes) {
      const fileEvents = events.filter((event) => event.file === file);
      for (let i = 1; i < fileEvents.length; i++) {
        assert.ok(fileEvents[i]!.downloadedBytes >= fileEvents[i - 1]!.downloadedBytes, `${file} progress never goes back`);
      }
      assert.ok(fileEvents.every((event) => event.totalBytes === size));
      assert.equal(fileEvents.at(-1)!.downloadedBytes, size);
    }
  });

  it("hf://org/name/path/file.gguf fetches that one file into the snapshot, then resolves it with no network", async () => {
    const hub = await startFakeHub();
    const cacheDir = freshDir("hf-cache");
    let file: string;
    try {
      file = await resolveHfHandle(`hf://${GGUF_REPO}/${GGUF_FILE}`, { ...quiet, cacheDir, endpoint: hub.endpoint });
    } finally {
      await hub.close();
    }
    assert.equal(file, join(snapshotPath(cacheDir, GGUF_REPO), ...GGUF_FILE.split("/")));
    assert.equal(fileSha256(file), sha256(ggufBytes));
    assert.equal(readFileSync(join(cacheDir, "models--acme--falcon-gguf", "refs", "main"), "utf8"), COMMIT);
    assert.ok(!existsSync(join(snapshotPath(cacheDir, GGUF_REPO), "config.json")), "only the named file is fetched");
    assert.ok(!existsSync(join(snapshotPath(cacheDir, GGUF_REPO), "falcon-tiny.Q8_0.gguf")));
    assert.ok(hub.requests.every((request) => request.path.includes(GGUF_FILE) || request.path.startsWith("/cdn/")));
    assert.equal(await resolveHfHandle(`hf://${GGUF_REPO}/${GGUF_FILE}@main`, { ...quiet, cacheDir, offline: true }), file);
    await rejectsWithPresetError(
      resolveHfHandle(`hf://${GGUF_REPO}/falcon-tiny.Q8_0.gguf`, { ...quiet, cacheDir, offline: true }),
      /not in the Hugging Face cache and downloading is off.*Missing: falcon-tiny\.Q8_0\.gguf/,
    );
    const missing = await startFakeHub();
    try {
      await rejectsWithPresetError(
        resolveHfHandle(`hf://${GGUF_REPO}/absent.gguf`, { ...quiet, cacheDir: freshDir("hf-cache"), endpoint: missing.endpoint }),
        /repository, revision or file not found \(HTTP 404/,
      );
    } finally {
      await missing.close();
    }
  });

  it("rejects malformed handles", async () => {
    await rejectsWithPresetError(resolveHfHandle("hf://"), /not a Hugging Face handle/);
    await rejectsWithPresetError(resolveHfHandle("hf://acme/../etc"), /not a Hugging Face handle/);
    await rejectsWithPresetError(resolveHfHandle("hf://acme/model@../x"), /not a valid revision/);
    await rejectsWithPresetError(resolveHfHandle("hf://acme/model/config.json"), /not a Hugging Face handle/);
    await rejectsWithPresetError(resolveHfHandle("hf://acme/model/../x.gguf"), /not a Hugging Face handle/);
  });
});

describe("resolveKaggleHandle", () => {
  const kaggleCache = freshDir("kagglehub");
  const variationDir = join(kaggleCache, "models", "keras", "falcon", "keras", "falcon_refinedweb_1b_en");
  for (const version of ["1", "2"]) {
    mkdirSync(join(variationDir, version), { recursive: true });
    writeFileSync(join(variationDir, version, "config.json"), "{}");
  }

  it("finds a cached version, or the highest one when none is named", () => {
    const handle = "kaggle://keras/falcon/keras/falcon_refinedweb_1b_en";
    assert.equal(resolveKaggleHandle(`${handle}/1`, { cacheDir: kaggleCache }), join(variationDir, "1"));
    assert.equal(resolveKaggleHandle(handle, { cacheDir: kaggleCache }), join(variationDir, "2"));
  });

  it("says where to put an uncached model and that downloads need credentials and kagglehub", () => {
    assert.throws(
      () => resolveKaggleHandle("kaggle://keras/falcon/keras/falcon_refinedweb_1b_en/3", { cacheDir: kaggleCache }),
      (error: unknown) =>
        error instanceof FalconPresetError &&
        error.message.includes(join(variationDir, "3")) &&
        /credentials/.test(error.message) &&
        /kagglehub/.test(error.message),
    );
    assert.throws(
      () => resolveKaggleHandle("kaggle://keras/other/keras/v", { cacheDir: kaggleCache }),
      (error: unknown) =>
        error instanceof FalconPresetError && error.message.includes(join(kaggleCache, "models", "keras", "other", "keras", "v", "1")),
    );
    assert.throws(() => resolveKaggleHandle("kaggle://keras/falcon"), FalconPresetError);
  });
});

describe("remote handle dispatch", () => {
  it("recognizes hf:// and kaggle:// handles only", () => {
    assert.equal(isRemoteHandle("hf://tiiuae/falcon-rw-1b"), true);
    assert.equal(isRemoteHandle("kaggle://keras/falcon/keras/falcon_refinedweb_1b_en/1"), true);
    assert.equal(isRemoteHandle("falcon_refinedweb_1b_en"), false);
    assert.equal(isRemoteHandle("/models/falcon"), false);
  });

  it("dispatches on the scheme", async () => {
    const kaggleCache = freshDir("kagglehub");
    const presetDir = join(kaggleCache, "models", "o", "m", "keras", "v", "4");
    mkdirSync(presetDir, { recursive: true });
    writeFileSync(join(presetDir, "config.json"), "{}");
    assert.equal(await resolvePresetHandle("kaggle://o/m/keras/v", { kaggleCacheDir: kaggleCache }), presetDir);
    await rejectsWithPresetError(
      resolvePresetHandle("hf://acme/absent", { ...quiet, cacheDir: freshDir("hf-cache"), offline: true }),
      /not in the Hugging Face cache/,
    );
    await rejectsWithPresetError(resolvePresetHandle("/models/falcon"), /not a remote preset handle/);
  });
});
