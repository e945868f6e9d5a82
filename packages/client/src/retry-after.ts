const DELAY_SECONDS = /^\d+$/;
/** IMF-fixdate, RFC 850 and asctime dates all start with a day name. */
const HTTP_DATE = /^[A-Za-z]{3}/;

/**
 * A `Retry-After` value in milliseconds (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date measured from the
 * response's own `Date` header when it has one (so a client clock that is off does not matter), else from
 * `nowMs`. A date in the past is 0. Anything else is `undefined`: no valid hint, use the backoff.
 */
export function parseRetryAfter(
  value: string | null,
  date: string | null,
  nowMs: number,
): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (DELAY_SECONDS.test(trimmed)) return Number(trimmed) * 1000;
  if (!HTTP_DATE.test(trimmed)) return undefined;
  const at = parseHttpDate(trimmed);
  if (Number.isNaN(at)) return undefined;
  const sent = date === null ? Number.NaN : parseHttpDate(date.trim());
  return Math.max(0, at - (Number.isNaN(sent) ? nowMs : sent));
}

/** HTTP dates are always GMT; asctime's form does not say so, and `Date.parse` would read it as local time. */
function parseHttpDate(value: string): number {
  return Date.parse(/GMT$/i.test(value) ? value : `${value} GMT`);
}
