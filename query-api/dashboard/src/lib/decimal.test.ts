import { describe, expect, it } from "vitest";
import { fromScaled, groupThousands, roundDecimal, sumDecimals, toScaled } from "./decimal";

describe("exact decimals", () => {
  it("scales the API's six-decimal energy strings without loss", () => {
    expect(toScaled("12.345678", 6)).toBe(12345678n);
    expect(toScaled("-0.5", 6)).toBe(-500000n);
    expect(toScaled("7", 6)).toBe(7000000n);
    expect(toScaled("0.000001", 6)).toBe(1n);
    expect(fromScaled(1n, 6)).toBe("0.000001");
    expect(fromScaled(-1234567n, 3)).toBe("-1234.567");
  });

  it("refuses what is not a decimal or loses digits", () => {
    expect(() => toScaled("1e3", 6)).toThrow();
    expect(() => toScaled("", 6)).toThrow();
    expect(() => toScaled("0.0000001", 6)).toThrow();
    expect(toScaled("0.1000000", 6)).toBe(100000n);
  });

  it("sums exactly where floats drift", () => {
    const days = Array.from({ length: 31 }, () => "0.100000");
    expect(days.map(Number).reduce((a, b) => a + b, 0)).not.toBe(3.1);
    expect(sumDecimals(days, 6)).toBe("3.100000");
    expect(sumDecimals(["10.512345", "9.487655", "-0.000001"], 6)).toBe("19.999999");
  });

  it("rounds half away from zero for display", () => {
    expect(roundDecimal("2.345", 2)).toBe("2.35");
    expect(roundDecimal("2.3449999", 2)).toBe("2.34");
    expect(roundDecimal("-4.665", 2)).toBe("-4.67");
    expect(roundDecimal("35", 2)).toBe("35.00");
    expect(roundDecimal("359.872000", 3)).toBe("359.872");
  });

  it("groups thousands", () => {
    expect(groupThousands("1234567.891")).toBe("1,234,567.891");
    expect(groupThousands("-1234")).toBe("-1,234");
    expect(groupThousands("999")).toBe("999");
  });
});
