const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Whether `key` can be sent as an sf-string: 1 or more characters of printable ASCII (0x20-0x7E). */
export function isValidKey(key: string): boolean {
  if (key.length === 0) return false;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

/** `key` as an RFC 8941 sf-string, the form the IETF draft gives the header: `"…"`, with `"` and `\` escaped. */
export function formatKey(key: string): string {
  return `"${key.replace(/[\\"]/g, "\\$&")}"`;
}

/**
 * The key in a header value the caller set: the unescaped content of an sf-string, or the trimmed value
 * itself (a raw key, Stripe style, or anything the server will judge).
 */
export function keyOfHeader(value: string): string {
  const trimmed = value.trim();
  if (
    trimmed.length < 2 ||
    trimmed.charCodeAt(0) !== QUOTE ||
    trimmed.charCodeAt(trimmed.length - 1) !== QUOTE
  ) {
    return trimmed;
  }
  let key = "";
  for (let i = 1; i < trimmed.length - 1; i++) {
    const c = trimmed.charCodeAt(i);
    if (c === QUOTE) return trimmed; // an unescaped quote inside: not one sf-string
    if (c === BACKSLASH) {
      if (i + 1 === trimmed.length - 1) return trimmed; // the closing quote is escaped: not terminated
      i++;
    }
    key += trimmed[i] ?? "";
  }
  return key;
}

/**
 * A random UUID (version 4). `crypto.randomUUID()` exists only in secure contexts in browsers (HTTPS or
 * localhost); elsewhere the same UUID is built from `crypto.getRandomValues()`, which exists everywhere.
 */
export function randomKey(): string {
  const webCrypto = globalThis.crypto;
  if (typeof webCrypto.randomUUID === "function") return webCrypto.randomUUID();
  const bytes = webCrypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
