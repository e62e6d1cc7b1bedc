import type { OCI2GondolinFlags, Dockerfile2GondolinFlags } from "./flags.js";

export type { OCI2GondolinFlags, Dockerfile2GondolinFlags };

/** One line of --progress json (see the README's "Progress as JSON"). */
export interface ProgressEvent {
  type: "log" | "build" | "download";
  /** The platform the event is about, in a multi-platform run. */
  scope?: string;
  message?: string;
  /** Downloads: the same id in a download's events. */
  id?: number;
  what?: string;
  state?: "start" | "progress" | "done" | "abandoned";
  bytes?: number;
  size?: number;
}

/** What every call takes besides the command's flags. */
export interface CallOptions {
  /** Called with each progress event. */
  onProgress?: (event: ProgressEvent) => void;
  /** Interrupts the run (the command's Ctrl-C: it removes what it started, exits 130) and rejects. */
  signal?: AbortSignal;
  /** Environment added to this process's. */
  env?: Record<string, string>;
  cwd?: string;
}

export type ConvertOptions = OCI2GondolinFlags & CallOptions;
export type BuildOptions = Dockerfile2GondolinFlags & CallOptions;

/** The result oci2gondolin prints: see the README (a plan with dryRun, per platform with several). */
export interface Result {
  command: string;
  source: { kind: string; ref?: string; path?: string; context?: string };
  sourceDigest: string;
  platform: string;
  mode: "rootfs" | "assets";
  outDir: string;
  rootfsPath: string;
  metadataPath: string;
  assetManifestPath?: string;
  files: string[];
  imported?: { tag: string; store: string; object: string };
  published?: Record<string, unknown>;
  [key: string]: unknown;
}

/** A failed run. */
export class Docker2vmError extends Error {
  /** The command's "How to fix" lines. */
  hints: string[];
  /** Its exit status: 1 on failure, 130 when interrupted. */
  exitCode: number;
  command?: string;
  /** Stopped through the signal (name "AbortError"). */
  interrupted: boolean;
}

/** No binaries for this host, or a damaged install. */
export class SetupError extends Error {
  hints: string[];
}

export const VERSION: string;

/** oci2gondolin: converts an image; resolves to its JSON result. */
export function convert(options: ConvertOptions): Promise<Result & Record<string, any>>;
/** dockerfile2gondolin: builds a Dockerfile with BuildKit and converts the result. */
export function build(options: BuildOptions): Promise<Result & Record<string, any>>;

export interface EnsureImageOptions extends Omit<ConvertOptions, "image" | "ociLayout" | "ociTar" | "out" | "mode" | "plain" | "dryRun"> {
  /** linux/amd64 or linux/arm64; this host's by default. */
  platform?: string;
  /** The Gondolin image tag (NAME:TAG); by default the reference's repository path and tag. */
  tag?: string;
}

/**
 * Converts ref and imports it into Gondolin's image store unless the image
 * it names now is there already; resolves to the value for
 * VM.create({ sandbox: { imagePath } }).
 */
export function ensureImage(ref: string, options?: EnsureImageOptions): Promise<string>;

/** The Gondolin tag ensureImage uses for ref by default. */
export function defaultTag(ref: string): string;

/** The arguments a call passes to the command (for tests and logs). */
export function toArgs(command: "oci2gondolin" | "dockerfile2gondolin", options: object): string[];
