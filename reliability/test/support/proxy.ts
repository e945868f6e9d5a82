/**
 * A TCP proxy on loopback between an application and its Redis, that can misbehave on command:
 *
 * - `latency(ms)`: every chunk waits `ms` in each direction (order kept);
 * - `drop()`: every chunk the application sends is delivered to Redis, then both connections are destroyed
 *   before the reply can come back (the command may have been applied: the caller cannot know);
 * - `blackHole()`: nothing moves in either direction, and nothing is lost: the bytes wait in the proxy, as
 *   they would in TCP buffers on a partitioned network, and arrive when it heals;
 * - `heal()`: back to passing everything through, delivering whatever was held.
 */
import { connect, createServer, type Server, type Socket } from "node:net";

type Mode = { kind: "pass" } | { kind: "latency"; ms: number } | { kind: "drop" } | { kind: "black-hole" };

class Direction {
  readonly queue: Array<{ chunk: Buffer; at: number }> = [];
  timer: NodeJS.Timeout | undefined;
  constructor(readonly target: Socket) {}
}

interface Pair {
  client: Socket;
  upstream: Socket;
  up: Direction;
  down: Direction;
}

export class FaultyProxy {
  #mode: Mode = { kind: "pass" };
  readonly #pairs = new Set<Pair>();
  /** Connections destroyed by `drop()`. */
  dropped = 0;
  /** Connections accepted so far. */
  accepted = 0;

  private constructor(
    readonly server: Server,
    readonly port: number,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start(upstreamPort: number): Promise<FaultyProxy> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("no proxy port");
    const proxy = new FaultyProxy(server, address.port);
    server.on("connection", (client) => proxy.#accept(client, upstreamPort));
    return proxy;
  }

  latency(ms: number): void {
    this.#mode = { kind: "latency", ms };
  }
  drop(): void {
    this.#mode = { kind: "drop" };
  }
  blackHole(): void {
    this.#mode = { kind: "black-hole" };
  }
  heal(): void {
    this.#mode = { kind: "pass" };
    for (const pair of this.#pairs) {
      this.#pump(pair.up);
      this.#pump(pair.down);
    }
  }

  async close(): Promise<void> {
    for (const pair of this.#pairs) this.#destroy(pair);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  #accept(client: Socket, upstreamPort: number): void {
    this.accepted++;
    const upstream = connect(upstreamPort, "127.0.0.1");
    const pair: Pair = { client, upstream, up: new Direction(upstream), down: new Direction(client) };
    this.#pairs.add(pair);
    client.on("data", (chunk: Buffer) => this.#forward(pair, pair.up, chunk));
    upstream.on("data", (chunk: Buffer) => this.#forward(pair, pair.down, chunk));
    for (const socket of [client, upstream]) {
      socket.on("error", () => undefined);
      socket.on("close", () => this.#destroy(pair));
    }
  }

  #forward(pair: Pair, direction: Direction, chunk: Buffer): void {
    if (this.#mode.kind === "drop" && direction === pair.up) {
      pair.upstream.write(chunk);
      this.dropped++;
      this.#destroy(pair);
      return;
    }
    const delay = this.#mode.kind === "latency" ? this.#mode.ms : 0;
    direction.queue.push({ chunk, at: performance.now() + delay });
    this.#pump(direction);
  }

  #pump(direction: Direction): void {
    if (this.#mode.kind === "black-hole" || direction.timer !== undefined) return;
    while (direction.queue.length > 0) {
      const head = direction.queue[0] as { chunk: Buffer; at: number };
      const wait = head.at - performance.now();
      if (wait > 0) {
        direction.timer = setTimeout(() => {
          direction.timer = undefined;
          this.#pump(direction);
        }, wait);
        return;
      }
      direction.queue.shift();
      if (!direction.target.destroyed) direction.target.write(head.chunk);
    }
  }

  #destroy(pair: Pair): void {
    if (!this.#pairs.delete(pair)) return;
    for (const direction of [pair.up, pair.down]) clearTimeout(direction.timer);
    pair.client.destroy();
    pair.upstream.destroy();
  }
}
