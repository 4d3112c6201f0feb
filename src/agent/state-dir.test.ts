import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, expect, test } from "vitest";
import { dropOtherStates } from "./state-dir.js";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

test("drops the states beside the runner's own, keeps its own, and removes a link without following it", () => {
  const root = mkdtempSync(join(tmpdir(), "paddock-states-"));
  const outside = mkdtempSync(join(tmpdir(), "paddock-outside-"));
  dirs.push(root, outside);
  writeFileSync(join(outside, "keep.txt"), "mine");
  mkdirSync(join(root, "run_source", "nested"), { recursive: true });
  writeFileSync(join(root, "run_source", "events.jsonl"), "the source run's log");
  writeFileSync(join(root, "run_source", "claim.json"), "{}");
  mkdirSync(join(root, "run_mine"));
  writeFileSync(join(root, "run_mine", "events.jsonl"), "mine");
  symlinkSync(outside, join(root, "planted"));

  expect(dropOtherStates(join(root, "run_mine")).sort()).toEqual(["planted", "run_source"]);
  expect(readdirSync(root)).toEqual(["run_mine"]);
  expect(readFileSync(join(root, "run_mine", "events.jsonl"), "utf8")).toBe("mine");
  expect(readFileSync(join(outside, "keep.txt"), "utf8")).toBe("mine");
});

test("a state root that does not exist yet has nothing to drop; a relative path is refused", () => {
  const root = mkdtempSync(join(tmpdir(), "paddock-states-"));
  dirs.push(root);
  expect(dropOtherStates(join(root, "absent", "run_x"))).toEqual([]);
  expect(existsSync(join(root, "absent"))).toBe(false);
  expect(() => dropOtherStates("state/run_x")).toThrow(/not an absolute path/);
});
