/**
 * Remote preset handles: `hf://org/name[@revision]` and `kaggle://owner/model/framework/variation[/version]`,
 * resolved to a local directory holding config.json and the weights.
 *
 * Hugging Face files go into the cache layout huggingface_hub uses (refs/, blobs/, snapshots/ of
 * relative symlinks), so Python tools and this library share one copy of multi-gigabyte weights.
 * Kaggle needs credentials and kagglehub, so a Kaggle handle only resolves from kagglehub's cache.
 */
import { createHash, type Hash } from "node:crypto";
import { once } from "node:events";
import { createReadStream, createWriteStream, existsSync, readdirSync } from "node:fs";
import { mkdir, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { finished } from "node:stream/promises";

import { describeValue, FalconPresetError } from "../errors.js";
import { MAX_INDEX_JSON_BYTES, readBoundedTextFile, readJsonObject } from "./json.js";

/** One progress report for one file being downloaded. */
export interface HubDownloadProgress {
  /** Path of the file inside the repository. */
  file: string;
  /** Bytes on disk so far, including those kept from an earlier, interrupted download. */
  downloadedBytes: number;
  /** The file's size; undefined when the server did not say. */
  totalBytes: number | undefined;
}

export interface HubOptions {
  /** Never use the network; also on when the environment sets HF_HUB_OFFLINE=1 (an explicit false wins). */
  offline?: boolean;
  /** Hub cache root; default $HF_HUB_CACHE, else ($HF_HOME or ~/.cache/huggingface)/hub. */
  cacheDir?: string;
  /** Default $HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Access token for gated or private repositories; default $HF_TOKEN. */
  token?: string;
  /** Called as each downloaded file grows; counts only grow and end at the file's size. */
  onProgress?: (progress: HubDownloadProgress) => void;
  /** A one-line-per-file progress bar on stderr; default: when stderr is a terminal. */
  progressBar?: boolean;
}

export interface KaggleOptions {
  /** kagglehub cache root; default $KAGGLEHUB_CACHE, else ~/.cache/kagglehub. */
  cacheDir?: string;
}

export interface PresetHandleOptions extends HubOptions {
  /** kagglehub cache root for kaggle:// handles (see KaggleOptions.cacheDir). */
  kaggleCacheDir?: string;
}

const HF_SCHEME = "hf://";
const KAGGLE_SCHEME = "kaggle://";
const DEFAULT_ENDPOINT = "https://huggingface.co";
const DEFAULT_REVISION = "main";
const CONFIG_FILE = "config.json";
const WEIGHTS_FILE = "model.safetensors";
const WEIGHTS_INDEX_FILE = "model.safetensors.index.json";
/** Fetched when the repository has them; the model loads without them. */
const OPTIONAL_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"] as const;
const GGUF_EXTENSION = ".gguf";
const COMMIT_HASH = /^[0-9a-f]{40}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** A stalled connection fails instead of hanging forever; the partial file resumes on the next try. */
const SOCKET_IDLE_TIMEOUT_MS = 60_000;
const PROGRESS_BAR_INTERVAL_MS = 200;
const PROGRESS_BAR_WIDTH = 20;
const BYTES_PER_MB = 1024 * 1024;
/** A ref file holds one commit hash. */
const MAX_REF_BYTES = 4096;

/** Whether `value` is an `hf://` or `kaggle://` handle rather than a local path or preset name. */
export function isRemoteHandle(value: string): boolean {
  return typeof value === "string" && (value.startsWith(HF_SCHEME) || value.startsWith(KAGGLE_SCHEME));
}

/** Resolves an `hf://` or `kaggle://` handle to a local preset directory. */
export async function resolvePresetHandle(handle: string, options: PresetHandleOptions = {}): Promise<string> {
  if (typeof handle === "string" && handle.startsWith(HF_SCHEME)) return resolveHfHandle(handle, options);
  if (typeof handle === "string" && handle.startsWith(KAGGLE_SCHEME)) {
    return resolveKaggleHandle(handle, { cacheDir: options.kaggleCacheDir });
  }
  throw new FalconPresetError(`"${String(handle)}" is not a remote preset handle (expected ${HF_SCHEME}… or ${KAGGLE_SCHEME}…)`);
}

/** A file or directory name that stays where it is joined: letters, digits, `_`, `-`, `.`, but not "." or "..". */
function isPlainName(name: string): boolean {
  return /^[\w.-]+$/.test(name) && !/^\.+$/.test(name);
}

/** A relative path of plain names ("a/b.json"), which cannot leave the directory it is joined to. */
function isPlainRelativePath(relativePath: string): boolean {
  return relativePath.split("/").every(isPlainName);
}

interface HfHandle {
  handle: string;
  /** "org/name". */
  repoId: string;
  revision: string;
  /** A single file of the repository (hf://org/name/dir/model.gguf): only it is fetched. */
  file?: string;
}

function parseHfHandle(handle: string): HfHandle {
  const body = handle.slice(HF_SCHEME.length);
  const at = body.indexOf("@");
  const repoPath = at === -1 ? body : body.slice(0, at);
  const revision = at === -1 ? DEFAULT_REVISION : body.slice(at + 1);
  const parts = repoPath.split("/");
  // hf://org/name/…/file.gguf names one GGUF file of the repository.
  const file = parts.length > 2 && repoPath.toLowerCase().endsWith(GGUF_EXTENSION) ? parts.slice(2).join("/") : undefined;
  const repoId = file === undefined ? repoPath : parts.slice(0, 2).join("/");
  if (!handle.startsWith(HF_SCHEME) || !isPlainRelativePath(repoPath) || repoId.split("/").length > 2) {
    throw new FalconPresetError(
      `"${handle}" is not a Hugging Face handle: expected hf://org/name, hf://org/name@revision or hf://org/name/file.gguf[@revision]`,
    );
  }
  // Branch names may contain "/" (refs/pr/1); each part becomes a directory under refs/.
  if (!isPlainRelativePath(revision)) {
    throw new FalconPresetError(`"${handle}": "${revision}" is not a valid revision (a branch, tag or commit hash)`);
  }
  return file === undefined ? { handle, repoId, revision } : { handle, repoId, revision, file };
}

function isEnvFlagOn(name: string): boolean {
  return ["1", "true", "yes", "on"].includes((process.env[name] ?? "").trim().toLowerCase());
}

function hfCacheRoot(options: HubOptions): string {
  if (options.cacheDir) return options.cacheDir;
  if (process.env["HF_HUB_CACHE"]) return process.env["HF_HUB_CACHE"];
  const hfHome =
    process.env["HF_HOME"] || path.join(process.env["XDG_CACHE_HOME"] || path.join(os.homedir(), ".cache"), "huggingface");
  return path.join(hfHome, "hub");
}

/** Joins a repository path ("a/b.json") below a local directory. */
function localPath(directory: string, repoPath: string): string {
  return path.join(directory, ...repoPath.split("/"));
}

function readRef(repoDir: string, revision: string): string | undefined {
  const refPath = localPath(path.join(repoDir, "refs"), revision);
  if (!existsSync(refPath)) return undefined;
  const commit = readBoundedTextFile(refPath, MAX_REF_BYTES).trim();
  return isPlainName(commit) ? commit : undefined;
}

/** Shard names listed in a safetensors index, each a relative path that stays inside the snapshot. */
function readShardNames(indexPath: string): string[] {
  const index = readJsonObject(indexPath, MAX_INDEX_JSON_BYTES);
  const weightMap = index["weight_map"];
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw new FalconPresetError(`${indexPath}: no "weight_map" object`);
  }
  const shards = new Set<string>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (typeof shard !== "string" || !isPlainRelativePath(shard)) {
      throw new FalconPresetError(`${indexPath}: weight_map["${tensor}"] is not a relative file name: ${describeValue(shard)}`);
    }
    shards.add(shard);
  }
  if (shards.size === 0) throw new FalconPresetError(`${indexPath}: "weight_map" lists no shards`);
  return [...shards];
}

/** What a snapshot still lacks to be loadable: config.json and the weights, whole or sharded. */
function missingSnapshotFiles(snapshotDir: string): string[] {
  const missing: string[] = [];
  if (!existsSync(path.join(snapshotDir, CONFIG_FILE))) missing.push(CONFIG_FILE);
  if (existsSync(path.join(snapshotDir, WEIGHTS_FILE))) return missing;
  const indexPath = path.join(snapshotDir, WEIGHTS_INDEX_FILE);
  if (!existsSync(indexPath)) {
    missing.push(`${WEIGHTS_FILE} (or ${WEIGHTS_INDEX_FILE} and every shard it lists)`);
    return missing;
  }
  for (const shard of readShardNames(indexPath)) {
    if (!existsSync(localPath(snapshotDir, shard))) missing.push(shard);
  }
  return missing;
}

/**
 * Resolves `hf://org/name[@revision]` to a snapshot directory in the Hugging Face cache, downloading
 * config.json, the safetensors weights (single or sharded) and the tokenizer files when they are
 * not cached. A complete cached snapshot is returned without any network access.
 * `hf://org/name/path/file.gguf[@revision]` resolves to that one file in the snapshot, fetched alone.
 */
export async function resolveHfHandle(handle: string, options: HubOptions = {}): Promise<string> {
  const repo = parseHfHandle(handle);
  const repoDir = path.join(hfCacheRoot(options), `models--${repo.repoId.replaceAll("/", "--")}`);
  const cachedCommit = COMMIT_HASH.test(repo.revision) ? repo.revision : readRef(repoDir, repo.revision);
  const cachedSnapshot = cachedCommit === undefined ? undefined : path.join(repoDir, "snapshots", cachedCommit);
  if (repo.file !== undefined && cachedSnapshot !== undefined && existsSync(localPath(cachedSnapshot, repo.file))) {
    return localPath(cachedSnapshot, repo.file);
  }
  const missing =
    repo.file !== undefined ? [repo.file] : cachedSnapshot === undefined ? undefined : missingSnapshotFiles(cachedSnapshot);
  if (repo.file === undefined && cachedSnapshot !== undefined && missing?.length === 0) return cachedSnapshot;

  const offline = options.offline ?? isEnvFlagOn("HF_HUB_OFFLINE");
  if (offline) {
    const why = options.offline === true ? "offline: true was passed" : "HF_HUB_OFFLINE is set";
    const howToAllow =
      options.offline === true ? "call without offline: true" : "unset HF_HUB_OFFLINE (or pass offline: false)";
    const where =
      cachedSnapshot === undefined
        ? `${path.join(repoDir, "snapshots", "<commit>")}, with ${localPath(path.join(repoDir, "refs"), repo.revision)} ` +
          `holding the commit hash "${repo.revision}" points to (or name the commit: hf://${repo.repoId}@<commit>)`
        : cachedSnapshot;
    const missingList = missing ?? [CONFIG_FILE, `${WEIGHTS_FILE} (or ${WEIGHTS_INDEX_FILE} and every shard it lists)`];
    throw new FalconPresetError(
      `${handle} is not in the Hugging Face cache and downloading is off (${why}). Missing: ${missingList.join(", ")}. ` +
        `They belong in ${where}. To download them, ${howToAllow}.`,
    );
  }
  const downloader = new HfSnapshotDownloader(repo, repoDir, options);
  return repo.file === undefined ? downloader.download() : downloader.downloadOne(repo.file);
}

/** What the Hub says about one file before it is downloaded. */
interface RemoteFile {
  /** Path inside the repository. */
  name: string;
  url: string;
  /** The blob's name in the cache: the LFS sha256 for weights, the git blob hash otherwise. */
  etag: string | undefined;
  sha256: string | undefined;
  size: number | undefined;
  commit: string | undefined;
}

/** Headers gathered along a redirect chain; the first hop (the Hub, not the CDN) speaks for the file. */
interface HubResponse {
  response: http.IncomingMessage;
  commit: string | undefined;
  linkedEtag: string | undefined;
  etag: string | undefined;
  linkedSize: number | undefined;
}

function headerValue(response: http.IncomingMessage, name: string): string | undefined {
  const value = response.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** `W/"abc"` and `"abc"` → `abc`, as huggingface_hub names blobs. */
function normalizeEtag(value: string | undefined): string | undefined {
  const etag = value?.replace(/^W\//, "").replaceAll('"', "").trim().toLowerCase();
  return etag && isPlainName(etag) ? etag : undefined;
}

function parseSize(value: string | undefined): number | undefined {
  return value !== undefined && /^\d+$/.test(value) ? Number(value) : undefined;
}

function sendRequest(method: "HEAD" | "GET", url: URL, headers: Record<string, string>): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const client = url.protocol === "https:" ? https : url.protocol === "http:" ? http : undefined;
    if (client === undefined) {
      reject(new Error(`unsupported protocol ${url.protocol}`));
      return;
    }
    const request = client.request(url, { method, headers, timeout: SOCKET_IDLE_TIMEOUT_MS }, resolve);
    request.on("timeout", () => request.destroy(new Error(`no data for ${SOCKET_IDLE_TIMEOUT_MS / 1000} s`)));
    request.on("error", reject);
    request.end();
  });
}

async function hashFilePrefix(file: string, hash: Hash): Promise<void> {
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw cause;
  }
}

function errorMessage(cause: unknown): string {
  return cause instanceof Error ? cause.message || (cause as NodeJS.ErrnoException).code || cause.name : String(cause);
}

/** Downloads one repository revision into the cache: blobs, then snapshot symlinks to them. */
class HfSnapshotDownloader {
  private readonly endpoint: string;
  private readonly token: string | undefined;
  private readonly blobsDir: string;
  /** Known once config.json's response names it; later files are fetched at this exact commit. */
  private commit: string;

  constructor(
    private readonly repo: HfHandle,
    private readonly repoDir: string,
    private readonly options: HubOptions,
  ) {
    this.endpoint = (options.endpoint || process.env["HF_ENDPOINT"] || DEFAULT_ENDPOINT).replace(/\/+$/, "");
    this.token = options.token || process.env["HF_TOKEN"] || undefined;
    this.blobsDir = path.join(repoDir, "blobs");
    this.commit = repo.revision;
  }

  private get snapshotDir(): string {
    return path.join(this.repoDir, "snapshots", this.commit);
  }

  /** The commit the first file's response names becomes the snapshot's, and the revision's ref points to it. */
  private async adoptCommit(first: RemoteFile): Promise<void> {
    // Falls back to the revision string when the server does not name a commit (not the real Hub).
    if (first.commit !== undefined) this.commit = first.commit;
    if (this.commit !== this.repo.revision) {
      const refPath = localPath(path.join(this.repoDir, "refs"), this.repo.revision);
      await mkdir(path.dirname(refPath), { recursive: true });
      await writeFile(refPath, this.commit);
    }
  }

  /** Downloads one file of the revision (a GGUF) into the snapshot; returns its path there. */
  async downloadOne(name: string): Promise<string> {
    const remote = await this.probe(name);
    if (remote === undefined) {
      throw new FalconPresetError(`${this.repo.handle}: repository, revision or file not found (HTTP 404 for ${this.resolveUrl(name)})`);
    }
    await this.adoptCommit(remote);
    if (!existsSync(localPath(this.snapshotDir, name))) await this.fetchIntoSnapshot(remote);
    return localPath(this.snapshotDir, name);
  }

  async download(): Promise<string> {
    const config = await this.probe(CONFIG_FILE);
    if (config === undefined) {
      throw new FalconPresetError(
        `${this.repo.handle}: repository or revision not found (HTTP 404 for ${this.resolveUrl(CONFIG_FILE)})`,
      );
    }
    await this.adoptCommit(config);
    if (!existsSync(path.join(this.snapshotDir, CONFIG_FILE))) await this.fetchIntoSnapshot(config);

    if (await this.ensureFile(WEIGHTS_INDEX_FILE)) {
      for (const shard of readShardNames(path.join(this.snapshotDir, WEIGHTS_INDEX_FILE))) {
        if (!(await this.ensureFile(shard))) {
          throw new FalconPresetError(
            `${this.repo.handle}: ${WEIGHTS_INDEX_FILE} lists ${shard}, which the repository does not have (HTTP 404 for ${this.resolveUrl(shard)})`,
          );
        }
      }
    } else if (!(await this.ensureFile(WEIGHTS_FILE))) {
      throw new FalconPresetError(
        `${this.repo.handle}: the repository has neither ${WEIGHTS_FILE} nor ${WEIGHTS_INDEX_FILE} at revision ${this.repo.revision}`,
      );
    }
    for (const optional of OPTIONAL_FILES) await this.ensureFile(optional);
    return this.snapshotDir;
  }

  private resolveUrl(name: string): string {
    const revision = encodeURIComponent(this.commit);
    const file = name.split("/").map(encodeURIComponent).join("/");
    return `${this.endpoint}/${this.repo.repoId}/resolve/${revision}/${file}`;
  }

  /** Makes sure the snapshot has `name`; false when the repository does not have it. */
  private async ensureFile(name: string): Promise<boolean> {
    if (existsSync(localPath(this.snapshotDir, name))) return true;
    const remote = await this.probe(name);
    if (remote === undefined) return false;
    await this.fetchIntoSnapshot(remote);
    return true;
  }

  /**
   * HEAD of a file's resolve URL; undefined on 404. Like huggingface_hub it stops at a redirect off
   * the Hub (the Hub's redirect carries the file's X-Linked-* headers), as a CDN's signed URL may
   * be valid for GET only.
   */
  private async probe(name: string): Promise<RemoteFile | undefined> {
    const url = this.resolveUrl(name);
    const hub = await this.request("HEAD", url, { stayOnHub: true });
    hub.response.resume();
    const status = hub.response.statusCode ?? 0;
    if (status === 404) return undefined;
    const redirectedOffHub = REDIRECT_STATUSES.has(status);
    if (!redirectedOffHub && (status < 200 || status >= 300)) throw this.statusError(url, hub.response);
    const etag = normalizeEtag(hub.linkedEtag) ?? normalizeEtag(hub.etag);
    const bodySize = redirectedOffHub ? undefined : parseSize(headerValue(hub.response, "content-length"));
    return {
      name,
      url,
      etag,
      sha256: etag !== undefined && SHA256_HEX.test(etag) ? etag : undefined,
      size: hub.linkedSize ?? bodySize,
      commit: hub.commit !== undefined && isPlainName(hub.commit) ? hub.commit : undefined,
    };
  }

  private async fetchIntoSnapshot(remote: RemoteFile): Promise<void> {
    const blobPath = await this.downloadBlob(remote);
    const linkPath = localPath(this.snapshotDir, remote.name);
    await mkdir(path.dirname(linkPath), { recursive: true });
    await rm(linkPath, { force: true });
    try {
      await symlink(path.relative(path.dirname(linkPath), blobPath), linkPath);
    } catch (cause) {
      // Windows without symlink rights: huggingface_hub then keeps the file in the snapshot itself.
      if (!["EPERM", "EACCES", "ENOTSUP"].includes((cause as NodeJS.ErrnoException).code ?? "")) throw cause;
      await rename(blobPath, linkPath);
    }
  }

  /**
   * Streams a file into `blobs/<etag>.incomplete`, resuming what an earlier try left there, checks
   * its size and sha256, and only then renames it to `blobs/<etag>`. Returns the blob's path.
   */
  private async downloadBlob(remote: RemoteFile): Promise<string> {
    if (remote.etag !== undefined && existsSync(path.join(this.blobsDir, remote.etag))) {
      return path.join(this.blobsDir, remote.etag);
    }
    await mkdir(this.blobsDir, { recursive: true });
    const partialName = remote.etag ?? createHash("sha256").update(remote.url).digest("hex");
    const partialPath = path.join(this.blobsDir, `${partialName}.incomplete`);
    let resumeFrom = await fileSize(partialPath);
    if (remote.size !== undefined && resumeFrom > remote.size) {
      await rm(partialPath, { force: true });
      resumeFrom = 0;
    }
    // Hashing the kept prefix before the request keeps the connection from idling meanwhile.
    let hash = createHash("sha256");
    if (resumeFrom > 0) await hashFilePrefix(partialPath, hash);

    let downloadedBytes = resumeFrom;
    if (resumeFrom === 0 || resumeFrom !== remote.size) {
      const headers: Record<string, string> = resumeFrom > 0 ? { range: `bytes=${resumeFrom}-` } : {};
      const { response } = await this.request("GET", remote.url, { headers, partialPath });
      const status = response.statusCode ?? 0;
      const rangeStart = /^bytes (\d+)-/.exec(headerValue(response, "content-range") ?? "")?.[1];
      if (resumeFrom > 0 && (status === 416 || (status === 206 && Number(rangeStart) !== resumeFrom))) {
        // The server will not continue this partial file; it cannot be trusted, so start over.
        response.destroy();
        await rm(partialPath, { force: true });
        return this.downloadBlob(remote);
      }
      if (status !== 200 && status !== 206) {
        response.resume();
        throw this.statusError(remote.url, response);
      }
      if (status === 200 && resumeFrom > 0) {
        // A 200 to a range request is the whole file: what was kept is replaced, not extended.
        hash = createHash("sha256");
        downloadedBytes = 0;
      }
      downloadedBytes = await this.receiveBody(remote, response, partialPath, hash, downloadedBytes);
    }

    if (remote.size !== undefined && downloadedBytes < remote.size) {
      throw new FalconPresetError(
        `${this.repo.handle}: download of ${remote.url} ended after ${downloadedBytes} of ${remote.size} bytes. ` +
          `The partial download is kept in ${partialPath} and resumes on the next try.`,
      );
    }
    const actualSha256 = hash.digest("hex");
    const problems: string[] = [];
    if (remote.size !== undefined && downloadedBytes !== remote.size) {
      problems.push(`expected ${remote.size} bytes, got ${downloadedBytes}`);
    }
    if (remote.sha256 !== undefined && actualSha256 !== remote.sha256) {
      problems.push(`expected sha256 ${remote.sha256}, got ${actualSha256}`);
    }
    if (problems.length > 0) {
      await rm(partialPath, { force: true });
      throw new FalconPresetError(
        `${this.repo.handle}: ${remote.name} downloaded from ${remote.url} is corrupt: ${problems.join("; ")}. ` +
          `The download was deleted; the next try starts over.`,
      );
    }
    const blobPath = path.join(this.blobsDir, remote.etag ?? actualSha256);
    await rename(partialPath, blobPath);
    return blobPath;
  }

  /** Appends (after a 206) or writes (after a 200) the body to the partial file; returns its new size. */
  private async receiveBody(
    remote: RemoteFile,
    response: http.IncomingMessage,
    partialPath: string,
    hash: Hash,
    startBytes: number,
  ): Promise<number> {
    const limit = this.sizeLimit(remote, response, startBytes);
    const bodyLength = parseSize(headerValue(response, "content-length"));
    if (limit !== undefined && bodyLength !== undefined && startBytes + bodyLength > limit.bytes) {
      response.destroy();
      await rm(partialPath, { force: true });
      throw this.oversizeError(remote, partialPath, limit, `announced a ${bodyLength}-byte body after ${startBytes} bytes kept`);
    }
    const output = createWriteStream(partialPath, { flags: startBytes > 0 ? "a" : "w" });
    const progress = new FileProgress(remote.name, remote.size, startBytes, this.options);
    let downloadedBytes = startBytes;
    let failure: unknown;
    let oversize = false;
    // A write error (a full disk) can come while the loop awaits the network; it stops the download.
    output.on("error", (cause) => {
      failure ??= cause;
      response.destroy();
    });
    try {
      for await (const chunk of response) {
        const bytes = chunk as Buffer;
        // Nothing past the announced size reaches the disk.
        if (limit !== undefined && downloadedBytes + bytes.length > limit.bytes) {
          oversize = true;
          response.destroy();
          break;
        }
        hash.update(bytes);
        downloadedBytes += bytes.length;
        progress.update(downloadedBytes);
        if (!output.write(bytes)) await once(output, "drain");
      }
    } catch (cause) {
      failure ??= cause;
      response.destroy();
    }
    // Whatever arrived is flushed, so the next try resumes exactly where this one stopped.
    try {
      output.end();
      await finished(output);
    } catch (cause) {
      failure ??= cause;
    }
    progress.end(downloadedBytes);
    if (oversize && limit !== undefined) {
      await rm(partialPath, { force: true });
      throw this.oversizeError(remote, partialPath, limit, "sent more bytes than that");
    }
    if (failure !== undefined) {
      throw new FalconPresetError(
        `${this.repo.handle}: download of ${remote.url} failed after ${downloadedBytes} of ${remote.size ?? "?"} bytes ` +
          `(${errorMessage(failure)}). The partial download is kept in ${partialPath} and resumes on the next try.`,
        { cause: failure },
      );
    }
    return downloadedBytes;
  }

  /**
   * The most bytes `remote` may have on disk: the size the Hub announced (X-Linked-Size or the HEAD's
   * Content-Length), else the GET's Content-Length, else for a JSON file the bound its reader applies.
   */
  private sizeLimit(remote: RemoteFile, response: http.IncomingMessage, startBytes: number): { bytes: number; source: string } | undefined {
    if (remote.size !== undefined) return { bytes: remote.size, source: "the size the Hub announced" };
    const bodyLength = parseSize(headerValue(response, "content-length"));
    if (bodyLength !== undefined) return { bytes: startBytes + bodyLength, source: "the response's Content-Length" };
    if (remote.name.endsWith(".json")) return { bytes: MAX_INDEX_JSON_BYTES, source: "the limit for a JSON file" };
    return undefined;
  }

  private oversizeError(remote: RemoteFile, partialPath: string, limit: { bytes: number; source: string }, what: string): FalconPresetError {
    return new FalconPresetError(
      `${this.repo.handle}: ${remote.name} may have ${limit.bytes} bytes (${limit.source}), but ${remote.url} ${what}; ` +
        `the download was stopped and ${partialPath} deleted, so the next try starts over.`,
    );
  }

  /**
   * Sends a request, following up to MAX_REDIRECTS redirects (with `stayOnHub`, only those that stay
   * on the endpoint's origin); network failures become FalconPresetErrors.
   */
  private async request(
    method: "HEAD" | "GET",
    startUrl: string,
    options: { headers?: Record<string, string>; partialPath?: string; stayOnHub?: boolean },
  ): Promise<HubResponse> {
    const endpointOrigin = new URL(this.endpoint).origin;
    const headers: Record<string, string> = {
      "user-agent": `falcon-native (node ${process.version})`,
      // Sizes and hashes describe the stored bytes, not a compressed transfer.
      "accept-encoding": "identity",
      ...options.headers,
    };
    const seen: Omit<HubResponse, "response"> = {
      commit: undefined,
      linkedEtag: undefined,
      etag: undefined,
      linkedSize: undefined,
    };
    let url = new URL(startUrl);
    for (let redirects = 0; redirects <= MAX_REDIRECTS; redirects++) {
      // The token is for the Hub only: a CDN on another origin must not receive it.
      const hopHeaders =
        this.token !== undefined && url.origin === endpointOrigin ? { ...headers, authorization: `Bearer ${this.token}` } : headers;
      let response: http.IncomingMessage;
      try {
        response = await sendRequest(method, url, hopHeaders);
      } catch (cause) {
        const resumeNote = options.partialPath === undefined ? "" : ` The partial download is kept in ${options.partialPath}.`;
        throw new FalconPresetError(
          `${this.repo.handle}: request to ${url.href} failed (${errorMessage(cause)}).${resumeNote} ` +
            `Partial downloads resume on the next try.`,
          { cause },
        );
      }
      seen.commit ??= headerValue(response, "x-repo-commit");
      seen.linkedEtag ??= headerValue(response, "x-linked-etag");
      seen.etag ??= headerValue(response, "etag");
      seen.linkedSize ??= parseSize(headerValue(response, "x-linked-size"));
      const location = headerValue(response, "location");
      if (!REDIRECT_STATUSES.has(response.statusCode ?? 0) || location === undefined) return { response, ...seen };
      const next = new URL(location, url);
      if (options.stayOnHub && next.origin !== endpointOrigin) return { response, ...seen };
      response.resume();
      url = next;
    }
    throw new FalconPresetError(`${this.repo.handle}: more than ${MAX_REDIRECTS} redirects for ${startUrl}`);
  }

  private statusError(url: string, response: http.IncomingMessage): FalconPresetError {
    const status = response.statusCode ?? 0;
    const serverMessage = headerValue(response, "x-error-message");
    const detail = `HTTP ${status} for ${url}${serverMessage ? `: ${serverMessage}` : ""}`;
    if (status === 401 || status === 403) {
      const tokenAdvice =
        this.token === undefined
          ? "Set HF_TOKEN (or pass { token }) to a Hugging Face access token that can read it"
          : "The token in use (HF_TOKEN or { token }) does not grant access; use one that can read it";
      return new FalconPresetError(
        `${this.repo.handle}: access denied (${detail}). The repository is gated or private, or does not exist. ` +
          `${tokenAdvice}, and for a gated model accept its conditions at ${this.endpoint}/${this.repo.repoId} first.`,
      );
    }
    return new FalconPresetError(`${this.repo.handle}: ${detail}. Partial downloads resume on the next try.`);
  }
}

/** Reports one file's download to onProgress and, when enabled, as a line redrawn in place on stderr. */
class FileProgress {
  private readonly startedAt = performance.now();
  private readonly drawsBar: boolean;
  private lastDrawAt = Number.NEGATIVE_INFINITY;
  private lastLineLength = 0;

  constructor(
    private readonly file: string,
    private readonly totalBytes: number | undefined,
    private readonly resumedBytes: number,
    private readonly options: HubOptions,
  ) {
    this.drawsBar = options.progressBar ?? process.stderr.isTTY === true;
    this.update(resumedBytes);
  }

  update(downloadedBytes: number): void {
    this.options.onProgress?.({ file: this.file, downloadedBytes, totalBytes: this.totalBytes });
    const now = performance.now();
    if (this.drawsBar && now - this.lastDrawAt >= PROGRESS_BAR_INTERVAL_MS) {
      this.lastDrawAt = now;
      this.draw(downloadedBytes, now);
    }
  }

  end(downloadedBytes: number): void {
    if (!this.drawsBar) return;
    this.draw(downloadedBytes, performance.now());
    process.stderr.write("\n");
  }

  private draw(downloadedBytes: number, now: number): void {
    const seconds = Math.max((now - this.startedAt) / 1000, 1e-3);
    const speed = (downloadedBytes - this.resumedBytes) / BYTES_PER_MB / seconds;
    const megabytes = (downloadedBytes / BYTES_PER_MB).toFixed(1);
    let line: string;
    if (this.totalBytes === undefined || this.totalBytes === 0) {
      line = `${this.file} ${megabytes} MB ${speed.toFixed(1)} MB/s`;
    } else {
      const fraction = Math.min(downloadedBytes / this.totalBytes, 1);
      const filled = Math.round(fraction * PROGRESS_BAR_WIDTH);
      const bar = "#".repeat(filled) + ".".repeat(PROGRESS_BAR_WIDTH - filled);
      const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
      const totalMegabytes = (this.totalBytes / BYTES_PER_MB).toFixed(1);
      line = `${this.file} [${bar}] ${percent} ${megabytes}/${totalMegabytes} MB ${speed.toFixed(1)} MB/s`;
    }
    process.stderr.write(`\r${line.padEnd(this.lastLineLength)}`);
    this.lastLineLength = line.length;
  }
}

interface KaggleHandle {
  owner: string;
  model: string;
  framework: string;
  variation: string;
  version: number | undefined;
}

function parseKaggleHandle(handle: string): KaggleHandle {
  const parts = handle.startsWith(KAGGLE_SCHEME) ? handle.slice(KAGGLE_SCHEME.length).split("/") : [];
  const [owner, model, framework, variation, version] = parts;
  const valid =
    (parts.length === 4 || parts.length === 5) &&
    parts.slice(0, 4).every(isPlainName) &&
    (version === undefined || /^\d+$/.test(version));
  if (!valid || owner === undefined || model === undefined || framework === undefined || variation === undefined) {
    throw new FalconPresetError(
      `"${handle}" is not a Kaggle handle: expected kaggle://owner/model/framework/variation or …/variation/<version number>`,
    );
  }
  return { owner, model, framework, variation, version: version === undefined ? undefined : Number(version) };
}

function highestVersion(variationDir: string): number | undefined {
  if (!existsSync(variationDir)) return undefined;
  const versions = readdirSync(variationDir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && /^\d+$/.test(entry.name))
    .map((entry) => Number(entry.name));
  return versions.length === 0 ? undefined : Math.max(...versions);
}

/**
 * Resolves `kaggle://owner/model/framework/variation[/version]` from kagglehub's cache (without a
 * version: the highest version there). Downloading from Kaggle needs credentials and kagglehub,
 * so a handle that is not cached is an error saying where to put the files.
 */
export function resolveKaggleHandle(handle: string, options: KaggleOptions = {}): string {
  const kaggle = parseKaggleHandle(handle);
  const cacheRoot = options.cacheDir || process.env["KAGGLEHUB_CACHE"] || path.join(os.homedir(), ".cache", "kagglehub");
  const variationDir = path.join(cacheRoot, "models", kaggle.owner, kaggle.model, kaggle.framework, kaggle.variation);
  const version = kaggle.version ?? highestVersion(variationDir);
  const presetDir = path.join(variationDir, String(version ?? 1));
  if (version !== undefined && existsSync(path.join(presetDir, CONFIG_FILE))) return presetDir;
  const versionedHandle = `${kaggle.owner}/${kaggle.model}/${kaggle.framework}/${kaggle.variation}/${version ?? 1}`;
  throw new FalconPresetError(
    `${handle} is not in the kagglehub cache (no ${path.join(presetDir, CONFIG_FILE)}). Downloading from Kaggle needs ` +
      `Kaggle credentials (KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json) and the kagglehub Python package, ` +
      `which this library does not bundle. Download it once with ` +
      `KAGGLEHUB_CACHE=${cacheRoot} python -c "import kagglehub; kagglehub.model_download('${versionedHandle}')", ` +
      `or put the preset files (config.json and the weights) in ${presetDir}.`,
  );
}
