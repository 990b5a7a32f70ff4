// Exact arithmetic on the API's `Decimal` strings. Energy comes with six decimal
// places (integer milliwatt-hours in the database), money with the tariff's rounding:
// summing them as floats would drift, so sums are done on scaled BigInts.

/** `value` (a decimal string such as "12.345678" or "-0.5") scaled by 10^scale. */
export function toScaled(value: string, scale: number): bigint {
  const trimmed = value.trim();
  const match = /^([+-])?(\d*)(?:\.(\d*))?$/.exec(trimmed);
  if (!match || (match[2] === "" && (match[3] ?? "") === "")) {
    throw new Error(`not a decimal: ${JSON.stringify(value)}`);
  }
  const [, sign, whole, fraction = ""] = match;
  if (fraction.length > scale && /[1-9]/.test(fraction.slice(scale))) {
    throw new Error(`${value} has more than ${scale} decimal places`);
  }
  const digits = (whole || "0") + fraction.slice(0, scale).padEnd(scale, "0");
  const scaled = BigInt(digits);
  return sign === "-" ? -scaled : scaled;
}

/** The decimal string of `scaled / 10^scale`, with exactly `scale` decimal places. */
export function fromScaled(scaled: bigint, scale: number): string {
  const negative = scaled < 0n;
  const digits = (negative ? -scaled : scaled).toString().padStart(scale + 1, "0");
  const whole = digits.slice(0, digits.length - scale);
  const fraction = digits.slice(digits.length - scale);
  return `${negative ? "-" : ""}${whole}${scale > 0 ? "." + fraction : ""}`;
}

/** Exact sum of decimal strings, written with `scale` decimal places. */
export function sumDecimals(values: Iterable<string>, scale: number): string {
  let total = 0n;
  for (const value of values) total += toScaled(value, scale);
  return fromScaled(total, scale);
}

/** A decimal string for display, rounded half away from zero to `places`. */
export function roundDecimal(value: string, places: number): string {
  const scale = Math.max(places, (value.split(".")[1] ?? "").length);
  const scaled = toScaled(value, scale);
  const factor = 10n ** BigInt(scale - places);
  const half = factor / 2n;
  const rounded =
    factor === 1n ? scaled : scaled < 0n ? -((-scaled + half) / factor) : (scaled + half) / factor;
  return fromScaled(rounded, places);
}

/** Groups thousands in a decimal string: "12345.6" → "12,345.6". */
export function groupThousands(value: string): string {
  const [whole, fraction] = value.split(".");
  const sign = whole.startsWith("-") ? "-" : "";
  const digits = whole.replace("-", "").replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${sign}${digits}${fraction !== undefined ? "." + fraction : ""}`;
}
