#!/usr/bin/env node
// Test harness for docker2vm: boots a Gondolin guest asset directory with the
// real Gondolin host SDK (@earendil-works/gondolin, see package.json), runs
// commands in it and prints the results as JSON.
//
// Usage:
//   node run.mjs ASSETS_DIR [ROOTFS_MODE] [COMMANDS_JSON]
//   node run.mjs < request.json
//
// COMMANDS_JSON is a JSON array of argv arrays, e.g. '[["echo","hi"],["id","-u"]]'.
// A request on stdin is a JSON object:
//   {"imagePath": DIR, "rootfsMode": "cow"|"readonly"|"memory"|"",
//    "timeoutMs": 240000, "startTimeoutMs": 120000, "accel": "tcg",
//    "append": "console=ttyAMA0 initramfs_async=1" (optional: Gondolin's kernel command line base),
//    "vfs": false (true: Gondolin's default filesystem, /data through the guest's sandboxfs),
//    "mounts": {"/data/host": "/abs/host/dir"} (with vfs: host directories, RealFSProvider),
//    "commands": [{"argv": [...], "env": ["K=V"], "cwd": "/", "stdin": "text",
//                  "background": false}]}
//    "checkpoint": {"path": "/abs/cp.qcow2", "resumes": [[cmd, ...], [cmd, ...]]}
//      (optional: after the commands, checkpoint the VM (which stops it) and
//      resume it once per list, the VMs running side by side; their
//      commands run in rounds, the first of each VM, then the second...)
// A background command is started and left running while the commands after
// it run (a service the later ones talk to); its result holds the output it
// wrote until then, and exitCode -1 when it was still running.
//
// The result is printed on stdout as ONE line starting with RESULT_MARKER:
//   {"results":[{"argv":[...],"exitCode":0,"signal":null,"stdout":"...","stderr":"..."}],
//    "bootMs": N, "execMs": N, "error": "..."?}
// Gondolin debug output (protocol + guest console) goes to stderr.
import { VM, RealFSProvider } from "@earendil-works/gondolin";
import { readFileSync } from "node:fs";

const RESULT_MARKER = "@@DOCKER2VM-GONDOLIN-RESULT@@ ";

function emit(obj) {
  process.stdout.write(RESULT_MARKER + JSON.stringify(obj) + "\n");
}

function readRequest() {
  const args = process.argv.slice(2);
  if (args.length === 0) {
    return JSON.parse(readFileSync(0, "utf8"));
  }
  const req = { imagePath: args[0], rootfsMode: args[1] ?? "" };
  const cmds = args[2] !== undefined ? JSON.parse(args[2]) : [["/bin/echo", "hello"]];
  req.commands = cmds.map((c) => (Array.isArray(c) ? { argv: c } : c));
  return req;
}

function log(msg) {
  process.stderr.write(`[run.mjs ${new Date().toISOString()}] ${msg}\n`);
}

async function main() {
  const req = readRequest();
  if (!req.imagePath) throw new Error("imagePath is required");
  const commands = req.commands ?? [];
  const timeoutMs = req.timeoutMs ?? 240000;

  let vm = null;
  let closing = false;
  const out = { results: [], bootMs: 0, execMs: 0 };
  const fail = (why) => {
    out.error = why;
    emit(out);
    log(out.error);
    // Let Gondolin's exit handlers kill QEMU.
    process.exit(3);
  };
  let panicked = false;
  const timer = setTimeout(() => fail(`timeout after ${timeoutMs} ms`), timeoutMs);

  try {
    let vfs = null;
    if (req.vfs) {
      vfs = undefined; // Gondolin's default
      if (req.mounts) {
        vfs = { mounts: {} };
        for (const [guestPath, hostDir] of Object.entries(req.mounts)) {
          vfs.mounts[guestPath] = new RealFSProvider(hostDir);
        }
      }
    }
    const options = {
      vfs,
      startTimeoutMs: req.startTimeoutMs ?? 120000,
      sandbox: {
        imagePath: req.imagePath,
        // As root Gondolin picks KVM when /dev/kvm is writable; force TCG.
        accel: req.accel ?? "tcg",
        debug: ["protocol", "exec"],
      },
      debugLog: (component, message) => {
        process.stderr.write(`[${component}] ${message}\n`);
        // Gondolin sets no panic= on the kernel command line, so a guest
        // whose kernel panicked hangs until the timeout: end the run a
        // second after the panic line (time for the trace that follows).
        if (component === "qemu" && !panicked && message.includes("Kernel panic - not syncing")) {
          panicked = true;
          setTimeout(() => fail(`the guest kernel panicked: ${message.replace(/^stdout: /, "").trim()}`), 1000);
        }
      },
    };
    if (req.rootfsMode) options.rootfs = { mode: req.rootfsMode };
    if (req.memory) options.memory = req.memory;
    if (req.cpus) options.cpus = req.cpus;
    if (req.append) options.sandbox.append = req.append;

    const t0 = Date.now();
    log(`creating VM from ${req.imagePath} rootfsMode=${req.rootfsMode || "(default)"}`);
    vm = await VM.create(options);
    await vm.start();
    out.bootMs = Date.now() - t0;
    log(`VM started in ${out.bootMs} ms`);

    const t1 = Date.now();
    const background = [];
    for (const c of commands) {
      const execOpts = {};
      if (c.env) execOpts.env = c.env;
      if (c.cwd) execOpts.cwd = c.cwd;
      if (c.stdin !== undefined && c.stdin !== null) execOpts.stdin = c.stdin;
      if (c.background) {
        const entry = { argv: c.argv, exitCode: -1, signal: null, stdout: "", stderr: "" };
        out.results.push(entry);
        const proc = vm.exec(c.argv, { ...execOpts, stdout: "pipe", stderr: "pipe" });
        proc.stdout.on("data", (d) => (entry.stdout += d.toString()));
        proc.stderr.on("data", (d) => (entry.stderr += d.toString()));
        const done = proc.result.then(
          (r) => {
            entry.exitCode = r.exitCode;
            entry.signal = r.signal ?? null;
          },
          (err) => {
            // Closing the VM ends a command still running: not news.
            if (!closing) entry.stderr += `\n[run.mjs] ${err}`;
          },
        );
        background.push(done);
        continue;
      }
      const r = await vm.exec(c.argv, execOpts);
      out.results.push({
        argv: c.argv,
        exitCode: r.exitCode,
        signal: r.signal ?? null,
        stdout: r.stdout,
        stderr: r.stderr,
      });
    }
    // Output a background command wrote last may still be on its way.
    if (background.length > 0) {
      await Promise.race([Promise.all(background), new Promise((r) => setTimeout(r, 1000))]);
    }
    if (req.checkpoint) {
      log(`checkpointing to ${req.checkpoint.path}`);
      const cp = await vm.checkpoint(req.checkpoint.path);
      vm = null; // checkpoint stopped it
      const lists = req.checkpoint.resumes ?? [];
      const resumed = await Promise.all(lists.map(() => cp.resume(options)));
      try {
        const rounds = Math.max(0, ...lists.map((l) => l.length));
        for (let i = 0; i < rounds; i++) {
          for (let j = 0; j < lists.length; j++) {
            const c = lists[j][i];
            if (!c) continue;
            const r = await resumed[j].exec(c.argv, c.env ? { env: c.env } : {});
            out.results.push({ vm: j + 1, argv: c.argv, exitCode: r.exitCode, signal: r.signal ?? null, stdout: r.stdout, stderr: r.stderr });
          }
        }
      } finally {
        for (const r of resumed) await r.close().catch((err) => log(`close failed: ${err}`));
      }
    }
    out.execMs = Date.now() - t1;
  } catch (err) {
    out.error = err && err.stack ? err.stack : String(err);
  } finally {
    if (vm) {
      closing = true;
      try {
        await vm.close();
      } catch (err) {
        log(`close failed: ${err}`);
      }
    }
    clearTimeout(timer);
  }
  emit(out);
  process.exit(out.error ? 1 : 0);
}

main().catch((err) => {
  emit({ results: [], error: err && err.stack ? err.stack : String(err) });
  process.exit(1);
});
