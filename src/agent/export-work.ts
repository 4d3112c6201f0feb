export interface ExportedWork {
  /** The branch the agent's HEAD was on at the end; "" for a detached HEAD. */
  branch: string;
  /** The commit that is the agent's work: HEAD, after any uncommitted work was committed. */
  head: string;
  /** Whether `bundleFile` now holds a bundle (false: HEAD adds nothing to the source). */
  bundled: boolean;
}

/** The ref the bundle carries the work under; the host maps it onto the run's branch. (The capture itself: captureState.) */
export const EXPORT_REF = "refs/paddock/export";
