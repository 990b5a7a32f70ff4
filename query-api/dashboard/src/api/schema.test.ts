// Every operation the dashboard sends is valid against the schema query-api serves
// (query-api/schema.graphql, kept equal to the code by query-api's own test): a field
// renamed or removed in the API fails here, not in a user's browser.

import { readFileSync } from "node:fs";
import { buildSchema, Kind, validate, visit, type DocumentNode } from "graphql";
import { describe, expect, it } from "vitest";
import * as live from "./live";
import * as mutations from "./mutations";
import * as queries from "./queries";

const schema = buildSchema(readFileSync(new URL("../../../schema.graphql", import.meta.url), "utf8"));

function documents(module: Record<string, unknown>): [string, DocumentNode][] {
  return Object.entries(module).filter(
    (entry): entry is [string, DocumentNode] =>
      typeof entry[1] === "object" && entry[1] !== null && (entry[1] as DocumentNode).kind === "Document",
  );
}

describe("operations against query-api/schema.graphql", () => {
  const all = [...documents(queries), ...documents(mutations), ...documents(live)];

  it("finds the operations", () => {
    expect(all.length).toBeGreaterThan(15);
  });

  it("the meter picker searches on the server: devices(search:) is in the schema and MeterSearch uses it", () => {
    const devices = schema.getQueryType()!.getFields().devices;
    expect(devices.args.map((a) => a.name)).toEqual(expect.arrayContaining(["search", "lifecycle", "first"]));
    expect(String(devices.args.find((a) => a.name === "search")!.type)).toBe("String");
    // One `devices` per lifecycle, each with the typed text as `search`.
    const lifecycles: string[] = [];
    visit(queries.METER_SEARCH, {
      Field(node) {
        if (node.name.value !== "devices") return;
        const arg = (name: string) => node.arguments?.find((a) => a.name.value === name)?.value;
        const search = arg("search");
        expect(search?.kind === Kind.VARIABLE && search.name.value).toBe("search");
        const lifecycle = arg("lifecycle");
        if (lifecycle?.kind === Kind.ENUM) lifecycles.push(lifecycle.value);
      },
    });
    expect(lifecycles).toEqual(["REGISTERED", "DISCOVERED", "DECOMMISSIONED"]);
  });

  for (const [name, document] of all) {
    const isFragmentOnly = document.definitions.every((d) => d.kind === "FragmentDefinition");
    it(`${name} is valid`, () => {
      const errors = validate(schema, document).filter(
        // A fragment exported on its own is used by the operations that spread it.
        (e) => !(isFragmentOnly && /is never used/.test(e.message)),
      );
      expect(errors.map((e) => e.message)).toEqual([]);
    });
  }
});
