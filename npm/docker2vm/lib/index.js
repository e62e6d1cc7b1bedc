// docker2vm's JavaScript API: the converters as promises. Each call runs
// the binary for this host with the options as its flags and
// --progress json, reports its progress events, and resolves to the JSON
// result it prints (or rejects with its error and "How to fix" hints).
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";

import { binaryPath, SetupError, VERSION } from "./binary.js";

const require = createRequire(import.meta.url);
const FLAGS = require("./flags.json");

export { VERSION, SetupError };

/** Options of every call that are not flags. */
const CALL_OPTIONS = new Set(["onProgress", "signal", "env", "cwd"]);

/**
 * A failed run: message is the command's error, hints its "How to fix"
 * lines, exitCode its status (130 when interrupted).
 */
export class Docker2vmError extends Error {
  constructor(message, { hints = [], exitCode = 1, command, interrupted = false, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = interrupted ? "AbortError" : "Docker2vmError";
    this.hints = hints;
    this.exitCode = exitCode;
    this.command = command;
    this.interrupted = interrupted;
  }
}

/** Converts an image (oci2gondolin). Options: its flags in camelCase. */
export function convert(options) {
  return run("oci2gondolin", options);
}

/** Builds a Dockerfile and converts the result (dockerfile2gondolin). */
export function build(options) {
  return run("dockerfile2gondolin", options);
}

/** The argument list for command's flags as options (exported for tests). */
export function toArgs(command, options = {}) {
  const spec = FLAGS[command];
  if (options === null || typeof options !== "object" || Array.isArray(options)) {
    throw new TypeError(`${command}: options must be an object of its flags in camelCase, e.g. { image: "alpine:3.20", out: "./out" }`);
  }
  const args = [];
  for (const [key, value] of Object.entries(options)) {
    if (CALL_OPTIONS.has(key) || value === undefined) continue;
    const flag = spec[key];
    if (!flag) {
      const near = Object.keys(spec).filter((k) => distance(k.toLowerCase(), key.toLowerCase()) <= 2);
      throw new TypeError(`${command}: unknown option "${key}".` + (near.length ? ` Did you mean ${near.map((n) => `"${n}"`).join(" or ")}?` : "") +
        ` The options are its flags in camelCase: ${Object.keys(spec).join(", ")}.`);
    }
    const bad = (want) => new TypeError(`${command}: option "${key}" (--${flag.flag}) must be ${want}, not ${JSON.stringify(value)}.`);
    switch (flag.kind) {
      case "boolean":
        if (typeof value !== "boolean") throw bad("true or false");
        if (value) args.push(`--${flag.flag}`);
        break;
      case "list":
        for (const v of Array.isArray(value) ? value : [value]) {
          if (typeof v !== "string") throw bad("a string or an array of strings");
          args.push(`--${flag.flag}`, v);
        }
        break;
      default:
        if (typeof value !== "string" && typeof value !== "number") throw bad("a string");
        args.push(`--${flag.flag}`, String(value));
    }
  }
  return args;
}

function distance(a, b) {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length][b.length];
}

/** Runs command with options; see convert. */
function run(command, options = {}) {
  return new Promise((resolve, reject) => {
    let args, bin;
    try {
      args = [...toArgs(command, options), "--progress", "json"];
      bin = binaryPath(command);
    } catch (err) {
      reject(err);
      return;
    }
    const { onProgress, signal } = options;
    if (onProgress !== undefined && typeof onProgress !== "function") {
      reject(new TypeError(`${command}: onProgress must be a function`));
      return;
    }
    if (signal?.aborted) {
      reject(new Docker2vmError("interrupted before it started", { exitCode: 130, command, interrupted: true, cause: signal.reason }));
      return;
    }
    const child = spawn(bin, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: options.env ? { ...process.env, ...options.env } : process.env,
      cwd: options.cwd,
    });
    let stdout = "";
    let rest = "";
    let failure;
    const other = []; // stderr lines that were not events
    child.stdout.setEncoding("utf8").on("data", (s) => (stdout += s));
    child.stderr.setEncoding("utf8").on("data", (s) => {
      rest += s;
      let i;
      while ((i = rest.indexOf("\n")) >= 0) {
        const line = rest.slice(0, i);
        rest = rest.slice(i + 1);
        let ev;
        try {
          ev = JSON.parse(line);
        } catch {
          ev = { type: "log", message: line };
          other.push(line);
        }
        if (ev.type === "error") failure = ev;
        else onProgress?.(ev);
      }
    });
    // The binary's own interrupt path: it stops, removes what it started
    // and exits 130.
    const abort = () => child.kill("SIGINT");
    signal?.addEventListener("abort", abort, { once: true });
    child.on("error", (err) => {
      signal?.removeEventListener("abort", abort);
      reject(new Docker2vmError(`running ${bin}: ${err.message}`, { command, cause: err }));
    });
    child.on("close", (code, sig) => {
      signal?.removeEventListener("abort", abort);
      if (code === 0) {
        try {
          resolve(JSON.parse(stdout));
        } catch (err) {
          reject(new Docker2vmError(`${command} printed no JSON result: ${err.message}`, { command, exitCode: 0 }));
        }
        return;
      }
      const interrupted = code === 130 || sig === "SIGINT" || !!signal?.aborted;
      const message = failure?.message ?? (other.join("\n") || `${command} exited with ${code ?? sig}`);
      reject(new Docker2vmError(message, {
        hints: failure?.hints ?? [],
        exitCode: code ?? 1,
        command,
        interrupted,
        cause: interrupted ? signal?.reason : undefined,
      }));
    });
  });
}

/** The Go platform of this host: linux/amd64 or linux/arm64. */
function hostPlatform() {
  return `linux/${process.arch === "x64" ? "amd64" : process.arch}`;
}

/** Gondolin's architecture name for a platform. */
function gondolinArch(platform) {
  return /arm64|aarch64/.test(platform) ? "aarch64" : "x86_64";
}

/** A Gondolin image tag for an image reference: its repository path and tag. */
export function defaultTag(ref) {
  let name = ref;
  let tag = "latest";
  const at = name.indexOf("@");
  if (at >= 0) {
    tag = name.slice(at + 1).replace(/^sha256:/, "").slice(0, 12);
    name = name.slice(0, at);
  }
  const colon = name.lastIndexOf(":");
  if (colon > name.lastIndexOf("/")) {
    if (at < 0) tag = name.slice(colon + 1);
    name = name.slice(0, colon);
  }
  const parts = name.split("/");
  if (parts.length > 1 && (parts[0].includes(".") || parts[0].includes(":") || parts[0] === "localhost")) parts.shift();
  if (parts[0] === "library" && parts.length > 1) parts.shift();
  return `${parts.join("/").toLowerCase()}:${tag}`;
}

function cacheRoot(options) {
  if (options.cacheDir) return path.resolve(options.cacheDir);
  const xdg = process.env.XDG_CACHE_HOME;
  return path.join(xdg || path.join(os.homedir(), ".cache"), "docker2vm");
}

/**
 * Makes sure Gondolin's image store holds ref converted for platform
 * (default: this host's) under tag (default: from ref), converting and
 * importing it when the image's digest is not there yet, and resolves to
 * what to pass as VM.create's sandbox.imagePath: the tag (for this host's
 * architecture), or the guest's directory in the store (for another).
 * Other options are oci2gondolin's (base, cacheDir, insecureRegistry, ...).
 */
export async function ensureImage(ref, options = {}) {
  if (typeof ref !== "string" || ref === "") throw new TypeError("ensureImage: ref must be an image reference, e.g. \"alpine:3.20\"");
  const { platform = hostPlatform(), tag = defaultTag(ref), ...rest } = options;
  for (const k of ["image", "ociLayout", "ociTar", "out", "mode", "plain", "dryRun"]) {
    if (k in rest) throw new TypeError(`ensureImage: option "${k}" is set by ensureImage itself`);
  }
  const arch = gondolinArch(platform);
  const imagePath = (object) => (arch === gondolinArch(hostPlatform()) ? tag : object);
  const root = cacheRoot(rest);
  const record = path.join(root, "ensure", crypto.createHash("sha256").update(`${tag}\0${platform}`).digest("hex").slice(0, 32) + ".json");

  // Which image the reference names now: a dry run (the manifest only).
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "docker2vm-ensure-"));
  try {
    const plan = await convert({ ...rest, image: ref, platform, mode: "assets", out: path.join(scratch, "out"), dryRun: true });
    const digest = plan.image?.digest;
    const seen = readRecord(record);
    if (seen && seen.digest === digest && storeHas(seen, tag, arch)) {
      rest.onProgress?.({ type: "log", message: `${tag} (${arch}) is in Gondolin's image store already: ${ref} ${digest}` });
      return imagePath(seen.object);
    }
    const res = await convert({ ...rest, image: ref, platform, mode: "assets", tag, out: path.join(scratch, "out") });
    const imp = res.imported;
    if (!imp?.object) throw new Docker2vmError(`oci2gondolin did not import ${ref} into Gondolin's image store`, { command: "oci2gondolin" });
    fs.mkdirSync(path.dirname(record), { recursive: true });
    const tmp = `${record}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify({ ref, platform, tag, digest: res.sourceDigest, object: imp.object, store: imp.store }) + "\n");
    fs.renameSync(tmp, record);
    return imagePath(imp.object);
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

function readRecord(p) {
  try {
    return JSON.parse(fs.readFileSync(p, "utf8"));
  } catch {
    return undefined;
  }
}

/** Whether the store's ref for tag and arch still names the recorded object. */
function storeHas(rec, tag, arch) {
  try {
    const i = tag.lastIndexOf(":");
    const link = path.join(rec.store, "refs", ...tag.slice(0, i).split("/"), tag.slice(i + 1), arch);
    return fs.realpathSync(link) === fs.realpathSync(rec.object) && fs.existsSync(path.join(rec.object, "manifest.json"));
  } catch {
    return false;
  }
}
