import { HANDOFF_CONVERSATION_REF, HANDOFF_WORK_REF } from "../agent/runner-protocol.js";
import { SandboxError } from "../errors.js";
import { git } from "./git.js";
import { unbundleChecked } from "./checked-bundle.js";
import { HOST_GIT_CONFIG } from "./import-work.js";
import { handoffRefPrefix, type SandboxSpec } from "./provider.js";

/**
 * Puts a handed-in state where the run's sandbox can fetch it: the upload's bundle is
 * fetched into the source repository (hooks off, every object checked) under the run's own
 * refs, `refs/paddock/handoff/<run>/{work,conversation}`, and nothing else. Idempotent.
 */
export async function importHandoff(source: string, runId: string, h: NonNullable<SandboxSpec["handoff"]>, signal: AbortSignal): Promise<void> {
  const prefix = handoffRefPrefix(runId);
  const hostGit = (...args: string[]) => git([...HOST_GIT_CONFIG, ...args], { cwd: source, signal });
  const refs: Record<string, string> = { [HANDOFF_WORK_REF]: `${prefix}/work`, ...(h.conversation ? { [HANDOFF_CONVERSATION_REF]: `${prefix}/conversation` } : {}) };
  await unbundleChecked({ cwd: source, bundle: h.bundle, refs, git: (args) => hostGit(...args), signal }).catch((error: Error) => {
    throw new SandboxError(`the handed-in state cannot be used: ${error.message}`, false);
  });
  const at = (rev: string) => hostGit("rev-parse", "--verify", "--quiet", rev).catch(() => "");
  if ((await at(`${prefix}/work`)) !== h.worktree || (await at(`${h.worktree}^1`)) !== h.index || (await at(`${h.index}^1`)) !== h.head) {
    throw new SandboxError("the handed-in bundle does not hold the commits its manifest names (head <- index <- worktree)", false);
  }
  if (h.conversation && (await at(`${prefix}/conversation`)) !== h.conversation) throw new SandboxError("the handed-in bundle does not hold the conversation its manifest names", false);
}
