import { describe, expect, it } from "vitest";
import { addDays, ago, localDate } from "./time";

describe("meter-local time", () => {
  it("gives the local date of an instant in the meter's zone", () => {
    // 23:45 UTC on 31 March is already 1 April in Kolkata (+05:30) but not in London (BST +01:00 from 31 March 2013 01:00 UTC).
    expect(localDate("2013-03-31T23:45:00Z", "Asia/Kolkata")).toBe("2013-04-01");
    expect(localDate("2013-03-31T22:45:00Z", "Europe/London")).toBe("2013-03-31");
    expect(localDate("2013-03-31T23:15:00Z", "Europe/London")).toBe("2013-04-01");
    expect(localDate("2013-01-31T23:59:59Z", "UTC")).toBe("2013-01-31");
  });

  it("adds calendar days across month and year ends", () => {
    expect(addDays("2013-02-01", -29)).toBe("2013-01-03");
    expect(addDays("2012-12-31", 1)).toBe("2013-01-01");
    expect(addDays("2012-02-28", 1)).toBe("2012-02-29");
  });

  it("says how long ago", () => {
    const now = Date.parse("2013-02-01T00:00:00Z");
    expect(ago(null, now)).toBe("never");
    expect(ago("2013-01-31T23:59:30Z", now)).toBe("30 s ago");
    expect(ago("2013-01-31T23:00:00Z", now)).toBe("60 min ago");
    expect(ago("2013-01-30T00:00:00Z", now)).toBe("2 days ago");
  });
});
