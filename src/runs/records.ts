/**
 * The records the run layer hands the API. Their shapes are the store's; the API reads them
 * through this layer, never from src/store (a lint rule keeps it so).
 */
export type { LogLine, RunEventKind, RunEventRow, RunLimits, RunStatusName, TaskRecord } from "../store/records.js";
export { RUN_EVENT_KINDS } from "../store/records.js";
export type { StoredRun } from "../store/runs-repository.js";
