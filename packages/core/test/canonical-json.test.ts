import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { canonicalJson, MAX_JSON_DEPTH } from "../src/canonical-json.js";

const SEED = 20240501;

describe("canonicalJson: equivalent texts", () => {
  it("ignores member order and insignificant whitespace", () => {
    const a = canonicalJson('{"b":1,"a":{"d":[1, 2],"c":null}}');
    const b = canonicalJson(' \r\n\t{ "a" : { "c" : null , "d" : [ 1 ,2 ] } ,\n "b" : 1 }\n');
    expect(a).toBe('{"a":{"c":null,"d":[1,2]},"b":1}');
    expect(b).toBe(a);
  });

  it("keeps array order", () => {
    expect(canonicalJson("[3, 1, 2]")).toBe("[3,1,2]");
  });

  it("sorts keys by UTF-16 code units of the decoded key", () => {
    expect(canonicalJson('{"b":0,"\\u0061":1,"B":2,"\u00e9":3,"\ud83d\ude00":4,"\uffff":5,"":6}')).toBe(
      '{"":6,"B":2,"a":1,"b":0,"\u00e9":3,"\ud83d\ude00":4,"\uffff":5}',
    );
  });

  it("normalises string escapes to the JSON.stringify form", () => {
    expect(canonicalJson('"\\u0041"')).toBe('"A"');
    expect(canonicalJson('"\\u00e9"')).toBe(canonicalJson('"\u00e9"'));
    expect(canonicalJson('"\\/"')).toBe('"/"');
    expect(canonicalJson('"\\u000A\\n\\u0008\\u001f\\u0022\\u005C"')).toBe('"\\n\\n\\b\\u001f\\"\\\\"');
    expect(canonicalJson('"\\uD83D\\uDE00"')).toBe('"\ud83d\ude00"');
  });

  it("keeps lone surrogates, escaped the way JSON.stringify escapes them", () => {
    expect(canonicalJson('"\\ud800x"')).toBe('"\\ud800x"');
    expect(canonicalJson('"\ud800x"')).toBe('"\\ud800x"');
    expect(canonicalJson('"\\uDC00"')).toBe('"\\udc00"');
  });

  it("treats an escaped key and its plain spelling as the same key", () => {
    expect(canonicalJson('{"\\u0062":1,"a":2}')).toBe('{"a":2,"b":1}');
  });

  it("keeps true, false and null", () => {
    expect(canonicalJson("[true,false,null]")).toBe("[true,false,null]");
  });

  it.each([
    ['"x"', '"x"'],
    ["1", "1"],
    ["null", "null"],
    [" -0.5e-3 ", "-0.5e-3"],
    ["{}", "{}"],
    ["[ ]", "[]"],
  ])("accepts the top-level scalar or empty container %j", (text, expected) => {
    expect(canonicalJson(text)).toBe(expected);
  });
});

describe("canonicalJson: texts that must stay different", () => {
  it("keeps integers beyond 2^53 exact", () => {
    expect(canonicalJson("9007199254740993")).toBe("9007199254740993");
    expect(canonicalJson("9007199254740993")).not.toBe(canonicalJson("9007199254740992"));
  });

  it.each([["1.0"], ["1e2"], ["1E2"], ["1e+2"], ["-0"], ["0.10"], ["123456789012345678901234567890"]])(
    "keeps the number lexeme %s exactly",
    (text) => {
      expect(canonicalJson(`[${text}]`)).toBe(`[${text}]`);
    },
  );

  it("distinguishes 1.0 from 1", () => {
    expect(canonicalJson('{"a":1.0}')).not.toBe(canonicalJson('{"a":1}'));
  });

  it("keeps duplicate keys, in source order, among the sorted members", () => {
    expect(canonicalJson('{"b":1,"a":2,"b":3,"a":1}')).toBe('{"a":2,"a":1,"b":1,"b":3}');
  });
});

describe("canonicalJson: invalid texts", () => {
  it.each([
    [""],
    ["   "],
    ["[1,]"],
    ['{"a":1,}'],
    ["{'a':1}"],
    ["'a'"],
    ["[1] // comment"],
    ["/* c */ 1"],
    ["01"],
    ["-01"],
    [".5"],
    ["1."],
    ["+1"],
    ["-"],
    ["1e"],
    ["1e+"],
    ["0x10"],
    ["NaN"],
    ["Infinity"],
    ["-Infinity"],
    ['"abc'],
    ['"abc\\"'],
    ["[1, 2"],
    ['{"a":1'],
    ["[1] x"],
    ["1 2"],
    ['"a\nb"'],
    ['"a\tb"'],
    ['{"a"}'],
    ['{"a":}'],
    ["{1:2}"],
    ['{"a" 1}'],
    ['{"a":1 "b":2}'],
    ["[1 2]"],
    ['"\\x"'],
    ['"\\u12"'],
    ['"\\u12G4"'],
    ["tru"],
    ["True"],
    ["nulll"],
    ["\u00a01"],
    ["\f1"],
    ["[,1]"],
    ["{,}"],
  ])("rejects %j", (text) => {
    expect(canonicalJson(text)).toBeUndefined();
  });

  it(`accepts ${MAX_JSON_DEPTH} nested containers and rejects one more without throwing`, () => {
    expect(canonicalJson("[".repeat(MAX_JSON_DEPTH) + "]".repeat(MAX_JSON_DEPTH))).toBe(
      "[".repeat(MAX_JSON_DEPTH) + "]".repeat(MAX_JSON_DEPTH),
    );
    const deeper = MAX_JSON_DEPTH + 1;
    expect(canonicalJson("[".repeat(deeper) + "]".repeat(deeper))).toBeUndefined();
    expect(canonicalJson(`${'{"a":'.repeat(deeper)}1${"}".repeat(deeper)}`)).toBeUndefined();
  });

  it("rejects very deep nesting without overflowing the stack", () => {
    expect(canonicalJson("[".repeat(1_000_000))).toBeUndefined();
    expect(canonicalJson("[".repeat(100_000) + "]".repeat(100_000))).toBeUndefined();
  });
});

/** A deterministic PRNG so a generated seed fully determines a shuffle. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffled<T>(items: T[], next: () => number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy;
}

/** Writes a JSON string literal for `s`, each code unit randomly raw, `\uXXXX` or a short escape. */
function encodeString(s: string, next: () => number): string {
  const short: Record<string, string> = { '"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "/": "\\/" };
  let out = '"';
  for (const unit of s.split("")) {
    const code = unit.charCodeAt(0);
    const r = next();
    const hex = `\\u${code.toString(16).padStart(4, "0")}`;
    if (r < 0.3) out += r < 0.15 ? hex : hex.toUpperCase().replace("\\U", "\\u");
    else if (short[unit] !== undefined && r < 0.6) out += short[unit];
    else out += code < 0x20 || unit === '"' || unit === "\\" ? hex : unit;
  }
  return `${out}"`;
}

const codeUnit = fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code));
const anyString = fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.string({ unit: codeUnit }));

describe("canonicalJson: properties", () => {
  it("preserves the value of any JSON text", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = JSON.stringify(value);
        const canonical = canonicalJson(text);
        expect(canonical).toBeDefined();
        expect(JSON.parse(canonical as string)).toEqual(JSON.parse(text));
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it("is idempotent", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const canonical = canonicalJson(JSON.stringify(value)) as string;
        expect(canonicalJson(canonical)).toBe(canonical);
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it("gives the same output for any member order and whitespace", () => {
    const whitespace = fc.string({ unit: fc.constantFrom(" ", "\t", "\n", "\r"), maxLength: 10 });
    fc.assert(
      fc.property(fc.jsonValue(), fc.integer(), whitespace, whitespace, (value, seed, indent, around) => {
        const next = random(seed);
        // Object.fromEntries defines own properties, so even a "__proto__" key survives the shuffle.
        const shuffleKeys = (_key: string, v: unknown): unknown =>
          v !== null && typeof v === "object" && !Array.isArray(v)
            ? Object.fromEntries(shuffled(Object.entries(v), next))
            : v;
        const reordered = `${around}${JSON.stringify(value, shuffleKeys, indent)}${around}`;
        expect(canonicalJson(reordered)).toBe(canonicalJson(JSON.stringify(value)));
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it("writes any string, however it is escaped, exactly as JSON.stringify does", () => {
    fc.assert(
      fc.property(anyString, fc.integer(), (s, seed) => {
        const expected = JSON.stringify(s);
        expect(canonicalJson(expected)).toBe(expected);
        expect(canonicalJson(encodeString(s, random(seed)))).toBe(expected);
        expect(canonicalJson(`{${encodeString(s, random(seed + 1))}:0}`)).toBe(`{${expected}:0}`);
      }),
      { seed: SEED, numRuns: 1000 },
    );
  });

  it("sorts members by the decoded key however the keys are escaped", () => {
    fc.assert(
      fc.property(fc.uniqueArray(anyString, { maxLength: 8 }), fc.integer(), (keys, seed) => {
        const next = random(seed);
        const text = `{${shuffled(keys, next)
          .map((key) => `${encodeString(key, next)}:${JSON.stringify(key)}`)
          .join(",")}}`;
        const sorted = [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
        expect(canonicalJson(text)).toBe(
          `{${sorted.map((k) => `${JSON.stringify(k)}:${JSON.stringify(k)}`).join(",")}}`,
        );
      }),
      { seed: SEED, numRuns: 500 },
    );
  });
});
