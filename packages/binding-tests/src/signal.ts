/**
 * What the `/signal` route answers, given the binding's `idempotencySignal(...)` for its request: `{"signal":
 * null}` when the request is not under a claim; otherwise, once the signal aborts (or the gate opens),
 * `{"aborted":…,"code":…}` with the abort reason's `code`.
 *
 * @example
 * ```ts
 * target.post("/signal", ...before, async (req, res) => {
 *   hooks.executed("signal");
 *   res.status(200).json(await signalReport(idempotencySignal(req), hooks.gate()));
 * });
 * ```
 */
export async function signalReport(
  signal: AbortSignal | undefined,
  gate: Promise<void>,
): Promise<{ signal: null } | { aborted: boolean; code: string | null }> {
  if (signal === undefined) return { signal: null };
  if (!signal.aborted) {
    await Promise.race([
      gate,
      new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true })),
    ]);
  }
  const reason = signal.reason as { code?: unknown } | undefined;
  return { aborted: signal.aborted, code: typeof reason?.code === "string" ? reason.code : null };
}
