/**
 * Counts the commands one connection sends, with Redis' MONITOR on a separate connection. MONITOR reports
 * each command with its source: the client's address for commands it sent, "lua" for commands a script
 * ran inside the server (which INFO counters would include). Only the watched client's own commands count.
 */
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";

export interface SeenCommand {
  /** Lower-case command name, e.g. "evalsha". */
  name: string;
  source: string;
}

export class CommandWatch {
  readonly #monitor: Redis;
  readonly #admin: Redis;
  readonly #address: string;
  #seen: SeenCommand[] = [];
  #waiting: { marker: string; resolve: () => void } | undefined;

  private constructor(monitor: Redis, admin: Redis, address: string) {
    this.#monitor = monitor;
    this.#admin = admin;
    this.#address = address;
    monitor.on("monitor", (_time: string, args: string[], source: string) => {
      const name = (args[0] ?? "").toLowerCase();
      if (name === "echo" && this.#waiting && args[1] === this.#waiting.marker) {
        this.#waiting.resolve();
        return;
      }
      this.#seen.push({ name, source });
    });
  }

  /** Watches the connection named `connectionName` (ioredis option `connectionName`, i.e. CLIENT SETNAME). */
  static async start(url: string, connectionName: string): Promise<CommandWatch> {
    const admin = new Redis(url);
    const list = await admin.client("LIST");
    const line = String(list)
      .split("\n")
      .find((entry) => entry.includes(` name=${connectionName} `));
    const address = line?.match(/ addr=(\S+) /)?.[1];
    if (!address) throw new Error(`no connection named ${connectionName} in CLIENT LIST:\n${list}`);
    const monitor = await new Redis(url).monitor();
    return new CommandWatch(monitor, admin, address);
  }

  /** The admin connection (not watched), for SCRIPT FLUSH and the like. */
  get admin(): Redis {
    return this.#admin;
  }

  /**
   * Runs `action` and returns the commands the watched connection sent meanwhile, and how many commands
   * scripts ran inside the server. A marker sent before and after through the admin connection fences the
   * window: MONITOR reports commands in execution order.
   */
  async during(action: () => Promise<unknown>): Promise<{ sent: string[]; insideScripts: number }> {
    await this.#fence();
    this.#seen = [];
    await action();
    await this.#fence();
    const seen = this.#seen;
    return {
      sent: seen.filter((command) => command.source === this.#address).map((command) => command.name),
      insideScripts: seen.filter((command) => command.source === "lua").length,
    };
  }

  async #fence(): Promise<void> {
    const marker = randomUUID();
    const seen = new Promise<void>((resolve) => {
      this.#waiting = { marker, resolve };
    });
    await this.#admin.echo(marker);
    await seen;
    this.#waiting = undefined;
  }

  stop(): void {
    this.#monitor.disconnect();
    this.#admin.disconnect();
  }
}
