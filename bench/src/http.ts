/** A minimal HTTP client for the wiring checks and the duplicates scenario (not for load). */
import { Agent, request } from "node:http";
import { EXECUTIONS_PATH, HANDLER_DELAY_HEADER, ORDERS_PATH } from "./config.js";
import { ORDER_BODY } from "./order.js";

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** Enough sockets that a burst of concurrent requests really is concurrent. */
const agent = new Agent({ keepAlive: true, maxSockets: 256 });

export function send(
  baseUrl: string,
  options: { method?: string; path?: string; key?: string; body?: string; handlerDelayMs?: number } = {},
): Promise<Reply> {
  const body = options.body;
  const headers: Record<string, string> = {};
  if (options.handlerDelayMs) headers[HANDLER_DELAY_HEADER] = String(options.handlerDelayMs);
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    headers["content-length"] = String(Buffer.byteLength(body));
  }
  if (options.key !== undefined) headers["idempotency-key"] = options.key;
  return new Promise((resolve, reject) => {
    const req = request(
      `${baseUrl}${options.path ?? ORDERS_PATH}`,
      { method: options.method ?? "POST", headers, agent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString("utf8"),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/** `POST /orders` with the standard order body. */
export function postOrder(
  baseUrl: string,
  key?: string,
  body: string = ORDER_BODY,
  handlerDelayMs = 0,
): Promise<Reply> {
  return send(baseUrl, { key, body, handlerDelayMs });
}

/** How many times the server's handler has run so far. */
export async function executions(baseUrl: string): Promise<number> {
  const reply = await send(baseUrl, { method: "GET", path: EXECUTIONS_PATH });
  if (reply.status !== 200) throw new Error(`${EXECUTIONS_PATH} answered ${reply.status}: ${reply.body}`);
  return (JSON.parse(reply.body) as { executions: number }).executions;
}

/** Closes the client's idle keep-alive sockets, so the process can exit. */
export function closeClient(): void {
  agent.destroy();
}
