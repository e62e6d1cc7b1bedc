// The JavaScript API as a user calls it, from a project that installed the
// packed docker2vm packages. Run by npm/npm_test.go (node --test, under the
// Node.js Gondolin declares), which sets up what it needs:
//   D2V_IMAGE     an image in a loopback registry (busybox)
//   D2V_FROM      an image for a Dockerfile's FROM, in the same registry
//   D2V_BASE      the Gondolin base bundle to convert with
//   D2V_BUILDKIT  a buildkitd address (buildctl is on the PATH)
//   D2V_SCRATCH   a directory the tests may write in
//   GONDOLIN_IMAGE_STORE, XDG_CACHE_HOME, TMPDIR: scratch too
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { build, convert, Docker2vmError, ensureImage } from "docker2vm";

const env = (k) => {
  const v = process.env[k];
  assert.ok(v, `${k} is not set`);
  return v;
};
const scratch = (name) => path.join(env("D2V_SCRATCH"), name);
const base = () => env("D2V_BASE");

test("convert resolves to the result and reports progress", async () => {
  const events = [];
  const out = scratch("convert");
  const res = await convert({ image: env("D2V_IMAGE"), platform: "linux/amd64", mode: "assets", base: base(), out, onProgress: (e) => events.push(e) });
  assert.equal(res.outDir, out);
  assert.equal(res.platform, "linux/amd64");
  assert.ok(fs.statSync(res.rootfsPath).size > 0);
  assert.ok(events.some((e) => e.type === "log" && e.message.startsWith("resolved ")), JSON.stringify(events));
  assert.ok(events.some((e) => e.type === "download" && e.state === "done"), JSON.stringify(events));
});

test("an unknown or ill-typed option is a TypeError naming it, before anything runs", async () => {
  await assert.rejects(convert({ imagee: "x", out: scratch("never") }), (err) => {
    assert.ok(err instanceof TypeError);
    assert.match(err.message, /unknown option "imagee"\. Did you mean "image"\?/);
    return true;
  });
  await assert.rejects(convert({ image: "x", out: scratch("never"), noCache: "yes" }), /option "noCache" \(--no-cache\) must be true or false/);
  assert.ok(!fs.existsSync(scratch("never")));
});

test("a failure rejects with the command's error and its hints", async () => {
  const foreign = scratch("foreign");
  fs.mkdirSync(foreign, { recursive: true });
  fs.writeFileSync(path.join(foreign, "notes.txt"), "mine");
  await assert.rejects(convert({ image: env("D2V_IMAGE"), platform: "linux/amd64", plain: true, out: foreign }), (err) => {
    assert.ok(err instanceof Docker2vmError);
    assert.equal(err.exitCode, 1);
    assert.match(err.message, /does not hold a docker2vm output/);
    assert.ok(err.hints.some((h) => h.includes("--force")), err.hints.join("\n"));
    return true;
  });
  assert.equal(fs.readFileSync(path.join(foreign, "notes.txt"), "utf8"), "mine");
});

test("build builds with BuildKit and converts", async () => {
  const ctx = scratch("ctx");
  fs.mkdirSync(ctx, { recursive: true });
  fs.writeFileSync(path.join(ctx, "Dockerfile"), `FROM ${env("D2V_FROM")}\nCOPY note.txt /note.txt\n`);
  fs.writeFileSync(path.join(ctx, "note.txt"), "built through the API\n");
  const events = [];
  const res = await build({ context: ctx, builder: "buildctl", buildkitAddr: env("D2V_BUILDKIT"), platform: "linux/amd64", plain: true, out: scratch("built"), onProgress: (e) => events.push(e) });
  assert.equal(res.source.kind, "dockerfile");
  assert.ok(fs.statSync(res.rootfsPath).size > 0);
  assert.ok(events.some((e) => e.type === "build"), "no build log events");
});

test("an aborted call rejects as interrupted (exit 130) and leaves nothing behind", async () => {
  const ctx = scratch("slow");
  fs.mkdirSync(ctx, { recursive: true });
  fs.writeFileSync(path.join(ctx, "Dockerfile"), `FROM ${env("D2V_FROM")}\nRUN sleep 60\n`);
  const out = scratch("aborted");
  const ac = new AbortController();
  const tmpBefore = fs.readdirSync(process.env.TMPDIR);
  await assert.rejects(
    build({ context: ctx, builder: "buildctl", buildkitAddr: env("D2V_BUILDKIT"), platform: "linux/amd64", plain: true, noCache: true, out, signal: ac.signal,
      // The step is running: interrupt it.
      onProgress: (e) => { if (e.type === "build" && /RUN sleep 60/.test(e.message)) ac.abort(new Error("user cancelled")); } }),
    (err) => {
      assert.equal(err.name, "AbortError");
      assert.equal(err.exitCode, 130);
      assert.equal(err.interrupted, true);
      assert.equal(err.cause?.message, "user cancelled");
      return true;
    },
  );
  assert.ok(!fs.existsSync(out), `${out} exists after an aborted run`);
  assert.deepEqual(fs.readdirSync(process.env.TMPDIR).filter((n) => !tmpBefore.includes(n)), [], "an aborted build left temporary files");
});

test("ensureImage converts once, then finds the image in Gondolin's store, and the guest boots", async () => {
  const first = [];
  const imagePath = await ensureImage(env("D2V_IMAGE"), { platform: "linux/amd64", tag: "d2v-api:1", base: base(), onProgress: (e) => first.push(e) });
  assert.equal(imagePath, "d2v-api:1");
  // (The conversion itself may come from docker2vm's result cache: the
  // test above converted the same image.)
  assert.ok(first.some((e) => e.type === "log" && /^published /.test(e.message)), `the first call did not convert: ${JSON.stringify(first)}`);
  const second = [];
  assert.equal(await ensureImage(env("D2V_IMAGE"), { platform: "linux/amd64", tag: "d2v-api:1", base: base(), onProgress: (e) => second.push(e) }), imagePath);
  assert.ok(!second.some((e) => /^published |^applied layer|^wrote rootfs/.test(e.message ?? "")), `the second call converted again: ${JSON.stringify(second)}`);
  assert.ok(second.some((e) => /is in Gondolin's image store already/.test(e.message ?? "")));

  if (!process.env.D2V_BOOT) return;
  const { VM } = await import("@earendil-works/gondolin");
  const vm = await VM.create({ sandbox: { imagePath } });
  try {
    const r = await vm.exec(["/bin/busybox", "echo", "hello", "from", "js"]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, "hello from js\n");
  } finally {
    await vm.close();
  }
});
