/**
 * The exact response bodies the catalogue's handlers produce, shared so every framework sends the same
 * bytes and the table can check them.
 */

/**
 * `/binary`'s body for execution `n`: 65 536 bytes, byte `i` = `(i * 7 + n) & 255`.
 *
 * @example
 * ```ts
 * res.type("application/octet-stream").send(Buffer.from(binaryBody(hooks.executed("binary"))));
 * ```
 */
export function binaryBody(n: number): Uint8Array {
  const bytes = new Uint8Array(65_536);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + n) & 255;
  return bytes;
}

/**
 * `/chunks`' three text chunks for execution `n`, written one by one.
 *
 * @example
 * ```ts
 * for (const chunk of textChunks(n)) res.write(chunk);
 * res.end();
 * ```
 */
export function textChunks(n: number): string[] {
  return [`one ${n}\n`, `two ${n}\n`, `three ${n}\n`];
}

/**
 * `/stream`'s four binary chunks for execution `n`: 16 384 bytes each, byte `i` of chunk `k` =
 * `(i * 13 + k * 31 + n) & 255`.
 *
 * @example
 * ```ts
 * Readable.from(streamChunks(n).map((chunk) => Buffer.from(chunk))).pipe(res);
 * ```
 */
export function streamChunks(n: number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let k = 0; k < 4; k++) {
    const chunk = new Uint8Array(16_384);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 13 + k * 31 + n) & 255;
    chunks.push(chunk);
  }
  return chunks;
}

/**
 * Concatenates chunks (strings as UTF-8).
 *
 * @example
 * ```ts
 * expect(res.body.equals(concatBytes(streamChunks(1)))).toBe(true);
 * ```
 */
export function concatBytes(chunks: ReadonlyArray<string | Uint8Array>): Buffer {
  return Buffer.concat(chunks.map((chunk) => (typeof chunk === "string" ? Buffer.from(chunk) : chunk)));
}

/**
 * `/stream-gated`'s two text parts for execution `n`: the handler streams the first, awaits `hooks.gate()`,
 * then streams the second and ends.
 *
 * @example
 * ```ts
 * const [first, second] = gatedParts(hooks.executed("stream-gated"));
 * ```
 */
export function gatedParts(n: number): [string, string] {
  return [`part one ${n}\n`, `part two ${n}\n`];
}
