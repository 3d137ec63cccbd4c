/** What the tests share: the running suite named by the environment, and the one way to wait for an outcome. */
import { setTimeout as sleep } from "node:timers/promises";

/** The API and key of a running suite (`make run`, or the pytest that starts one), if the environment names them. */
export interface SuiteUnderTest {
  readonly address: string;
  readonly apiKey: string;
}

export function suiteFromEnvironment(): SuiteUnderTest | undefined {
  const address = process.env["KALCIFER_API_ADDRESS"];
  const apiKey = process.env["KALCIFER_API_KEY"];
  return address && apiKey ? { address, apiKey } : undefined;
}

/** Why the suite's tests are skipped when the environment names no suite. */
export const NO_SUITE = "set KALCIFER_API_ADDRESS (host:port) and KALCIFER_API_KEY (a tenant's raw key) to run";

/**
 * Calls `probe` until `until` holds for what it returned, and returns that; throws (with the last value seen)
 * after `withinMs`. Never a sleep standing in for an assertion.
 */
export async function eventually<T>(
  probe: () => Promise<T>,
  until: (value: T) => boolean,
  { withinMs, what, intervalMs = 100 }: { withinMs: number; what: string; intervalMs?: number },
): Promise<T> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const value = await probe();
    if (until(value)) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not reached within ${withinMs} ms; last seen: ${JSON.stringify(value, bigints)}`);
    }
    await sleep(intervalMs);
  }
}

function bigints(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}
