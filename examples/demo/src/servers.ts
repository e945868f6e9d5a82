import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";

const serverFile = fileURLToPath(new URL("./server.ts", import.meta.url));

interface LineWaiter {
  pattern: RegExp;
  resolve: (line: string) => void;
  reject: (error: Error) => void;
}

/** A server process (src/server.ts) started by the demo, whose stdout lines the demo can wait for. */
export class ServerProcess {
  /** The base URL, set once `ready` resolves. */
  url = "";
  /** Resolves once the server listens on its free loopback port. */
  readonly ready: Promise<void>;
  private readonly child: ChildProcess;
  private readonly waiters = new Set<LineWaiter>();

  constructor(
    readonly name: string,
    env: Record<string, string>,
  ) {
    // fork() runs the child with this process's flags, so the tsx loader that runs the demo runs it too. Its
    // IPC channel lets the child notice when the demo is gone, even if the demo was killed. `detached` gives
    // it its own process group: Ctrl-C reaches the demo only, and the demo stops its servers itself.
    this.child = fork(serverFile, {
      env: { ...process.env, ...env, SERVER_NAME: name, PORT: "0" },
      stdio: ["ignore", "pipe", "inherit", "ipc"],
      detached: true,
    });
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      for (const waiter of this.waiters) {
        if (waiter.pattern.test(line)) {
          this.waiters.delete(waiter);
          waiter.resolve(line);
        }
      }
    });
    this.child.on("exit", (code, signal) => {
      const error = new Error(`server ${name} exited (${signal ?? `code ${code}`})`);
      for (const waiter of this.waiters) waiter.reject(error);
      this.waiters.clear();
    });
    this.ready = this.waitFor(/^listening on /, 20_000).then((line) => {
      this.url = line.split(" ")[2]!;
    });
  }

  /** Resolves with the next stdout line that matches `pattern`; call it before causing that line. */
  waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    if (this.exited) return Promise.reject(new Error(`server ${this.name} is not running`));
    const line = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`server ${this.name} printed no line matching ${pattern} within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter: LineWaiter = {
        pattern,
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.waiters.add(waiter);
    });
    line.catch(() => {}); // a step that failed early no longer waits: its line not coming is no extra error
    return line;
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  /** Kills the process the hard way (no cleanup, like a crash or the OOM killer) and waits until it is gone. */
  async crash(): Promise<void> {
    if (this.exited) return;
    const exit = once(this.child, "exit");
    this.child.kill("SIGKILL");
    await exit;
  }

  /** Asks the process to shut down, and kills it if it has not within 2 s. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const exit = once(this.child, "exit");
    this.child.kill("SIGTERM");
    const stopped = await Promise.race([exit.then(() => true), delay(2_000, false, { ref: false })]);
    if (!stopped) await this.crash();
  }

  /** For a process that is about to exit: sends SIGKILL without waiting. */
  killNow(): void {
    if (!this.exited) this.child.kill("SIGKILL");
  }
}
