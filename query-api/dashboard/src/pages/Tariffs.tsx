// Tariff administration: every tariff with its versions and effective dates; a new
// version is the latest one edited (slabs added or removed, rates, charges, taxes,
// time-of-use bands) and published. The billing worker admits it and the list shows
// it once it is stored.

import { useEffect, useState } from "react";
import { useMutation, useQuery } from "urql";
import { apiErrors } from "../api/client";
import { PUBLISH_TARIFF_VERSION } from "../api/mutations";
import { TARIFFS } from "../api/queries";
import type { Tariff, TariffVersion } from "../api/types";
import { ErrorList } from "../components/ErrorList";
import { TariffEditor, type FieldError } from "../components/TariffEditor";
import { nextVersion, type Component, type TariffDocument } from "../lib/tariff";
import { isAdmin, useMe } from "../session";

export function TariffsPage() {
  const me = useMe();
  const [result, refetch] = useQuery<{ tariffs: Tariff[] }>({ query: TARIFFS });
  const tariffs = result.data?.tariffs ?? [];
  const [selected, setSelected] = useState<string | null>(null);
  const tariff = tariffs.find((t) => t.tariffId === selected) ?? tariffs[0];
  return (
    <section className="page">
      <h2>Tariffs</h2>
      <ErrorList error={result.error} />
      {result.fetching && !result.data ? <p className="hint">Loading…</p> : null}
      {result.data && tariffs.length === 0 ? <p className="hint">No tariff has been published yet.</p> : null}
      <div className="tariff-tabs" role="tablist">
        {tariffs.map((t) => (
          <button
            key={t.tariffId}
            role="tab"
            aria-selected={t.tariffId === tariff?.tariffId}
            className={t.tariffId === tariff?.tariffId ? "tab active" : "tab"}
            onClick={() => setSelected(t.tariffId)}
          >
            {t.tariffId}
          </button>
        ))}
      </div>
      {tariff ? <TariffDetail key={tariff.tariffId} tariff={tariff} canPublish={isAdmin(me)} onPublished={() => refetch({ requestPolicy: "network-only" })} /> : null}
    </section>
  );
}

function TariffDetail({ tariff, canPublish, onPublished }: { tariff: Tariff; canPublish: boolean; onPublished(): void }) {
  const versions = [...tariff.versions].sort((a, b) => b.version - a.version);
  const latest = versions[0];
  const [editing, setEditing] = useState<TariffDocument | null>(null);
  const [errors, setErrors] = useState<FieldError[]>([]);
  const [waitingFor, setWaitingFor] = useState<number | null>(null);
  const [publishState, publish] = useMutation(PUBLISH_TARIFF_VERSION);

  // After publishing, the version appears once the billing worker stored it.
  useEffect(() => {
    if (waitingFor === null) return;
    if (versions.some((v) => v.version === waitingFor)) {
      setWaitingFor(null);
      return;
    }
    const timer = setTimeout(onPublished, 700);
    return () => clearTimeout(timer);
  });

  async function submit(document: TariffDocument) {
    setErrors([]);
    const result = await publish({ document });
    if (result.error) {
      setErrors(apiErrors(result.error).map((e) => ({ path: e.field, message: e.message })));
      return;
    }
    setEditing(null);
    setWaitingFor(document.version);
    onPublished();
  }

  return (
    <>
      <section className="panel">
        <h3>
          {tariff.title ?? tariff.tariffId} <span className="muted">({tariff.currency}, {tariff.timeZone})</span>
        </h3>
        <div className="table-wrap">
          <table className="table" data-testid="tariff-versions">
            <thead>
              <tr>
                <th>Version</th>
                <th>Effective from</th>
                <th>Components</th>
                <th>Published</th>
              </tr>
            </thead>
            <tbody>
              {versions.map((v) => (
                <tr key={v.version} data-testid={`tariff-version-${v.version}`}>
                  <td data-label="Version">v{v.version}</td>
                  <td data-label="Effective from">{v.effectiveFrom}</td>
                  <td data-label="Components">
                    <VersionSummary version={v} />
                  </td>
                  <td data-label="Published">{v.publishedAt.slice(0, 16).replace("T", " ")} UTC</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        {waitingFor !== null ? <p className="hint">Published v{waitingFor}; waiting for the billing worker to store it…</p> : null}
        {canPublish && latest && !editing ? (
          <div className="form-actions" style={{ marginTop: "0.8rem" }}>
            <button
              className="button"
              data-testid="new-version"
              onClick={() => {
                setErrors([]);
                setEditing(nextVersion(latest.document, nextMonthStart(latest.effectiveFrom)));
              }}
            >
              New version
            </button>
          </div>
        ) : null}
        {!canPublish ? <p className="muted">Only an administrator publishes tariff versions.</p> : null}
      </section>
      {editing ? (
        <section className="panel">
          <h3>New version v{editing.version}</h3>
          <TariffEditor
            document={editing}
            errors={errors}
            busy={publishState.fetching}
            submitLabel={`Publish v${editing.version}`}
            onSubmit={submit}
            onCancel={() => setEditing(null)}
          />
        </section>
      ) : null}
    </>
  );
}

/** The first of the month after today (or after `after`, if later). */
function nextMonthStart(after: string): string {
  const today = new Date().toISOString().slice(0, 10);
  const base = after > today ? after : today;
  const [y, m] = base.split("-").map(Number);
  return new Date(Date.UTC(y, m, 1)).toISOString().slice(0, 10);
}

function describe(component: Component): string {
  switch (component.kind) {
    case "per_kwh":
      return `${component.name}: ${component.rate}/kWh`;
    case "slabs":
      return `slabs (${component.pricing.replace("_", "-")}): ${component.slabs
        .map((s) => `${s.up_to_kwh === null ? "rest" : `≤${s.up_to_kwh}`} @ ${s.rate}`)
        .join(", ")}`;
    case "time_of_use":
      return `time of use: ${component.bands.map((b) => `${b.name} ${b.from.slice(0, 5)}–${b.to.slice(0, 5)} @ ${b.rate}`).join(", ")}`;
    case "fixed":
      return `${component.name}: ${component.rate} ${component.per.replace(/_/g, " ")}`;
    case "percent":
      return `${component.name}: ${component.percent} % of ${component.of.join(", ")}`;
    case "minimum":
      return `${component.name}: minimum ${component.rate ?? "by kW"} per ${component.per.replace(/_/g, " ")}`;
    case "choose":
      return "choice by load or usage";
  }
}

function VersionSummary({ version }: { version: TariffVersion }) {
  const doc = version.document;
  return (
    <ul className="summary" data-testid={`summary-${version.version}`}>
      {doc.components.map((c, i) => (
        <li key={i}>{describe(c)}</li>
      ))}
      {(doc.included_taxes ?? []).map((t, i) => (
        <li key={`tax-${i}`}>
          {t.name} {t.percent} % included
        </li>
      ))}
    </ul>
  );
}
