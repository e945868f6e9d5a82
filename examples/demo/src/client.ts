import { request } from "node:http";

/** One attempt at creating an order: the same key, tenant and order make the same request. */
export interface Attempt {
  key: string;
  tenant: string;
  order: { item: string; quantity: number };
}

export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  /** The parsed JSON body (an order, or a problem+json object); `{}` if the body is not JSON. */
  body: Record<string, unknown>;
}

let sent = 0;

/** How many requests the client has sent, including those that never got an answer. */
export function requestsSent(): number {
  return sent;
}

function headersOf(attempt: Attempt): Record<string, string> {
  return {
    "content-type": "application/json",
    "idempotency-key": attempt.key,
    "x-tenant-id": attempt.tenant,
  };
}

/** `POST /orders`; rejects if the connection fails (for example when the server dies). */
export async function postOrder(baseUrl: string, attempt: Attempt): Promise<Reply> {
  sent += 1;
  const response = await fetch(`${baseUrl}/orders`, {
    method: "POST",
    headers: headersOf(attempt),
    body: JSON.stringify(attempt.order),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, body: parseObject(text) };
}

function parseObject(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/**
 * `POST /orders`, then drops the connection as soon as `dropWhen` resolves, the way a flaky network or a
 * client timeout would. Resolves with `true` if no response had arrived by then.
 */
export function postOrderAndDrop(
  baseUrl: string,
  attempt: Attempt,
  dropWhen: Promise<unknown>,
): Promise<boolean> {
  sent += 1;
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = request(`${baseUrl}/orders`, { method: "POST", headers: headersOf(attempt) });
    req.on("response", () => {
      answered = true;
    });
    req.on("error", () => {}); // destroying the request below makes it fail: that is the point
    req.end(JSON.stringify(attempt.order));
    dropWhen.then(() => {
      req.destroy();
      resolve(!answered);
    }, reject);
  });
}
