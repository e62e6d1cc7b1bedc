// Finds this host's docker2vm binaries: they come in a platform package,
// @docker2vm/<os>-<cpu>, that npm installs as an optional dependency on
// the host its os and cpu fields name (esbuild's layout).
import { spawn } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);

/** The hosts there are platform packages for. */
export const HOSTS = ["linux-x64", "linux-arm64", "darwin-x64", "darwin-arm64"];

/** This package's version: its platform packages have the same. */
export const VERSION = require("../package.json").version;

/** An error the launchers print as the binaries do: message, then how to fix it. */
export class SetupError extends Error {
  constructor(message, hints) {
    super(message);
    this.name = "SetupError";
    this.hints = hints;
  }
}

/** The platform package for this host: @docker2vm/<os>-<cpu>. */
export function platformPackage(platform = process.platform, arch = process.arch) {
  return `@docker2vm/${platform}-${arch}`;
}

/**
 * The path of one of the binaries (oci2gondolin, dockerfile2gondolin,
 * docker2vm) for this host. Throws a SetupError naming what is missing.
 */
export function binaryPath(name, platform = process.platform, arch = process.arch) {
  const host = `${platform}-${arch}`;
  if (!HOSTS.includes(host)) {
    throw new SetupError(`docker2vm has no binaries for ${platform}/${arch}; it runs on ${HOSTS.join(", ")}.`, [
      "Run it on one of those hosts, or build it from source: go install github.com/docker2vm/docker2vm/cmd/...@latest",
    ]);
  }
  const pkg = platformPackage(platform, arch);
  let dir;
  try {
    dir = path.dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    throw new SetupError(`The package ${pkg}, docker2vm's binaries for this host, is not installed.`, [
      `Install docker2vm without leaving out optional dependencies (not --omit=optional, --no-optional or --ignore-optional).`,
      `Or install it yourself: npm install ${pkg}@${VERSION}`,
    ]);
  }
  const bin = path.join(dir, "bin", name);
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new SetupError(`${bin} is missing or not executable: the install of ${pkg} is damaged.`, [
      `Reinstall it: npm install ${pkg}@${VERSION}`,
    ]);
  }
  return bin;
}

/** Formats an error as the binaries do on stderr. */
export function renderError(err) {
  let s = `Error: ${err.message}\n`;
  if (err.hints?.length) {
    s += "How to fix:\n" + err.hints.map((h) => `  - ${h}\n`).join("");
  }
  return s;
}

/**
 * Runs a binary with this process's arguments and terminal, and exits with
 * its status. A signal sent to this process alone is passed on; the
 * terminal's Ctrl-C reaches the binary directly, which cleans up and exits
 * 130.
 */
export function runBinary(name) {
  let bin;
  try {
    bin = binaryPath(name);
  } catch (err) {
    process.stderr.write(renderError(err));
    process.exit(1);
  }
  const child = spawn(bin, process.argv.slice(2), { stdio: "inherit" });
  const forward = (sig) => () => child.kill(sig);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, forward(sig));
  child.on("error", (err) => {
    process.stderr.write(renderError(new SetupError(`running ${bin}: ${err.message}`, [`Reinstall ${platformPackage()}@${VERSION}.`])));
    process.exit(1);
  });
  child.on("exit", (code, signal) => {
    if (signal) {
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
      return;
    }
    process.exit(code ?? 1);
  });
}
