import { randomBytes } from "node:crypto";
import type { NewEvent } from "./event-log.js";
import type { Json, PermissionOptionInfo, PermissionPolicy, PermissionResponse } from "./runner-protocol.js";

/** What the agent is told: an option chosen, or the request cancelled (its turn was). */
export type PermissionOutcome = { outcome: "selected"; optionId: string } | { outcome: "cancelled" };

interface Parked {
  options: PermissionOptionInfo[];
  settle: (optionId: string | null, by: string) => void;
}

export type PermissionAnswer = "ok" | "unknown" | "resolved" | "bad_option";

/**
 * The run's permission requests: each is recorded, then resolved by the policy at once,
 * or (ask) parked until the first client answers or the timeout rejects it. A turn's end
 * by cancel cancels what is still parked, as ACP requires of a client.
 */
export class PermissionBroker {
  private readonly parked = new Map<string, Parked>();
  private readonly resolved = new Set<string>();

  constructor(
    private readonly policy: PermissionPolicy,
    private readonly timeoutMs: number,
    private readonly append: (e: NewEvent) => void,
  ) {}

  get pending(): number {
    return this.parked.size;
  }

  /** Records a request and returns how it ends; `toolCall` is already redacted. */
  open(toolCall: Json, options: PermissionOptionInfo[]): Promise<PermissionOutcome> {
    const requestId = `perm_${randomBytes(8).toString("hex")}`;
    const expiresAt = this.policy === "ask" ? Date.now() + this.timeoutMs : null;
    this.append({ kind: "permission", requestId, toolCall, options, expiresAt });
    return new Promise<PermissionOutcome>((resolve) => {
      let timer: NodeJS.Timeout | null = null;
      const settle = (optionId: string | null, by: string) => {
        if (!this.parked.delete(requestId) && this.resolved.has(requestId)) return;
        if (timer) clearTimeout(timer);
        this.resolved.add(requestId);
        this.append({ kind: "permission_resolved", requestId, optionId, by });
        resolve(optionId === null ? { outcome: "cancelled" } : { outcome: "selected", optionId });
      };
      if (this.policy === "auto_allow") return settle(firstOf(options, "allow_") ?? firstOf(options, "reject_"), "policy");
      if (this.policy === "deny") return settle(firstOf(options, "reject_"), "policy");
      this.parked.set(requestId, { options, settle });
      timer = setTimeout(() => settle(firstOf(options, "reject_"), "timeout"), this.timeoutMs);
    });
  }

  /** A client's answer: the first one wins. optionId null rejects (the first reject option, or cancelled). */
  answer(response: PermissionResponse): PermissionAnswer {
    const p = this.parked.get(response.requestId);
    if (!p) return this.resolved.has(response.requestId) ? "resolved" : "unknown";
    if (response.optionId !== null && !p.options.some((o) => o.optionId === response.optionId)) return "bad_option";
    p.settle(response.optionId ?? firstOf(p.options, "reject_"), response.by);
    return "ok";
  }

  /** Cancels every parked request (the turn was cancelled, or the run is stopping). */
  cancelAll(by: string): void {
    for (const p of [...this.parked.values()]) p.settle(null, by);
  }
}

function firstOf(options: PermissionOptionInfo[], prefix: string): string | null {
  return options.find((o) => o.kind.startsWith(prefix))?.optionId ?? null;
}
