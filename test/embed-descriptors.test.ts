import { create, createFileRegistry, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { embedDescriptors, FILE_DESC_EXPECTED } from "../scripts/embed-descriptors.js";
import * as taskRun from "../src/gen/paddock/v1/task_run_pb.js";

const GEN = resolve(import.meta.dirname, "..", "src", "gen");
const GENERATED = ["paddock/v1/task_pb.ts", "paddock/v1/task_run_pb.ts", "paddock/v1/environment_pb.ts", "paddock/v1/token_pb.ts", "grpc/health/v1/health_pb.ts", "grpc/reflection/v1/reflection_pb.ts", "grpc/reflection/v1alpha/reflection_pb.ts"];

describe("descriptors embedded at build time (scripts/embed-descriptors.ts)", () => {
  it("every generated file gets its decoded descriptor, rebuilt exactly (the build refuses otherwise)", async () => {
    for (const file of GENERATED) {
      const path = join(GEN, file);
      const out = embedDescriptors(readFileSync(path, "utf8"), (await import(path)) as Record<string, unknown>);
      expect(out, file).not.toMatch(/fileDesc\("/);
      expect(out, file).toMatch(/fileDesc\(\(\(\)=>\{const p0=|fileDesc\(\{/);
    }
  });

  it("a file built from the embedded literal encodes and decodes a TaskRun as the generated code does", () => {
    const out = embedDescriptors(readFileSync(join(GEN, "paddock/v1/task_run_pb.ts"), "utf8"), taskRun as Record<string, unknown>);
    const at = out.indexOf("fileDesc(") + "fileDesc(".length;
    // The literal is written without spaces: ", [" is where the call's imports begin.
    const proto = new Function(`return ${out.slice(at, out.indexOf(", [", at))}`)() as typeof taskRun.file_paddock_v1_task_run.proto;
    const deps = taskRun.file_paddock_v1_task_run.dependencies;
    const schema = createFileRegistry(proto, (name) => deps.find((f) => f.proto.name === name)).getMessage("paddock.v1.TaskRun")!;
    const run = create(taskRun.TaskRunSchema, {
      id: "run_1",
      status: taskRun.RunStatus.QUEUED,
      agentCommand: ["a", "b"],
      exitCode: 3,
      createTime: timestampFromMs(1_700_000_000_000),
      phaseTimings: [{ phase: "queued" }],
    });
    const back = fromBinary(schema, toBinary(taskRun.TaskRunSchema, run));
    expect(toJson(schema, back)).toEqual(toJson(taskRun.TaskRunSchema, run));
    expect(toBinary(schema, back)).toEqual(toBinary(taskRun.TaskRunSchema, run));
  });

  it("the installed @bufbuild/protobuf's fileDesc() still does what the build replaces", () => {
    const file = createRequire(import.meta.url).resolve("@bufbuild/protobuf").replace(/cjs[\\/]index\.js$/, "esm/codegenv2/file.js");
    expect(readFileSync(file, "utf8")).toContain(FILE_DESC_EXPECTED);
  });
});
