// Tariff administration: add a slab to a published slab tariff and see the new
// version; a bad slab is refused by the API and the error shows next to the slab.

import { expect, test } from "@playwright/test";
import { graphql, screenshot, signIn, stack } from "./helpers";

interface Version {
  version: number;
  document: { components: { kind: string; slabs?: { up_to_kwh: string | null; rate: string }[] }[] };
}

async function versions(tariffId: string): Promise<Version[]> {
  const data = await graphql<{ tariff: { versions: Version[] } }>(
    `query($id: String!) { tariff(tariffId: $id) { versions { version document } } }`,
    { id: tariffId },
  );
  return data.tariff.versions;
}

test("add a slab to a tariff and see the new version", async ({ page }) => {
  const { slabTariffId } = stack();
  const before = await versions(slabTariffId);
  const latest = before[before.length - 1];
  const slabIndex = latest.document.components.findIndex((c) => c.kind === "slabs");
  const slabCount = latest.document.components[slabIndex].slabs!.length;

  await signIn(page);
  await page.getByRole("link", { name: "Tariffs" }).click();
  await page.getByRole("tab", { name: slabTariffId }).click();
  await expect(page.getByTestId(`tariff-version-${latest.version}`)).toBeVisible();
  await page.getByTestId("new-version").click();
  const editor = page.getByTestId("tariff-editor");
  await expect(editor).toBeVisible();

  // A new slab before the open last one: first a limit below the one before it.
  await editor.getByTestId(`add-slab-${slabIndex}`).click();
  const newRow = editor.getByTestId(`slab-row-${slabIndex}-${slabCount - 1}`);
  await newRow.getByLabel("name").fill("1000-1500");
  await newRow.getByLabel("up to kWh").fill("50");
  await newRow.getByLabel("rate per kWh").fill("7.95");
  await editor.getByTestId("publish-version").click();
  const error = editor.getByTestId(`error-components[${slabIndex}].slabs[${slabCount - 1}]`);
  await expect(error).toContainText("ascending");
  await screenshot(page, "tariff-error-desktop");

  // Fixed: above the previous limit.
  const previousLimit = Number(latest.document.components[slabIndex].slabs![slabCount - 2].up_to_kwh);
  await newRow.getByLabel("up to kWh").fill(String(previousLimit + 500));
  await editor.getByTestId("publish-version").click();
  const next = latest.version + 1;
  await expect(page.getByTestId(`tariff-version-${next}`)).toBeVisible();
  await expect(page.getByTestId(`summary-${next}`)).toContainText(`≤${previousLimit + 500} @ 7.95`);

  const after = await versions(slabTariffId);
  const published = after.find((v) => v.version === next)!;
  expect(published.document.components[slabIndex].slabs!.length).toBe(slabCount + 1);
  expect(published.document.components[slabIndex].slabs![slabCount - 1]).toMatchObject({
    up_to_kwh: String(previousLimit + 500),
    rate: "7.95",
  });
  await screenshot(page, "tariffs-desktop");
  await page.setViewportSize({ width: 390, height: 844 });
  await screenshot(page, "tariffs-phone");
});
