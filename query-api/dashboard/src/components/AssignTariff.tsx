// Which tariff billing uses for a meter, from which local day: the assignments so far
// and a new one (TariffAssigned; the billing worker projects it). A period is priced on
// the assignment in force on its first day.

import { useState } from "react";
import { useMutation, useQuery } from "urql";
import { apiErrors, type ApiError } from "../api/client";
import { ASSIGN_TARIFF } from "../api/mutations";
import { TARIFF_ASSIGNMENTS, TARIFF_IDS } from "../api/queries";
import type { Device } from "../api/types";
import { ErrorList } from "./ErrorList";

interface Assignment {
  tariffId: string;
  effectiveFrom: string;
  sanctionedLoadKw: string | null;
  assignedAt: string;
}

export function AssignTariff({ device, onDone }: { device: Device; onDone(message: string): void }) {
  const [assignments, refetch] = useQuery<{ tariffAssignments: Assignment[] }>({
    query: TARIFF_ASSIGNMENTS,
    variables: { deviceId: device.deviceId },
  });
  const [tariffs] = useQuery<{ tariffs: { tariffId: string; title: string | null }[] }>({ query: TARIFF_IDS });
  const firstOfMonth = new Date().toISOString().slice(0, 8) + "01";
  const [tariffId, setTariffId] = useState(device.assignedTariff?.tariffId ?? device.tariffId ?? "");
  const [effectiveFrom, setEffectiveFrom] = useState(firstOfMonth);
  const [load, setLoad] = useState(device.sanctionedLoadKw ?? "");
  const [errors, setErrors] = useState<ApiError[]>([]);
  const [state, assign] = useMutation(ASSIGN_TARIFF);
  const errorAt = (field: string) =>
    errors
      .filter((e) => e.field === field)
      .map((e, i) => (
        <span key={i} className="field-error" role="alert">
          {e.message}
        </span>
      ));
  const general = errors.filter((e) => !["tariffId", "effectiveFrom", "sanctionedLoadKw"].includes(e.field ?? ""));

  async function submit(event: React.FormEvent) {
    event.preventDefault();
    setErrors([]);
    const result = await assign({
      input: { deviceId: device.deviceId, tariffId, effectiveFrom, sanctionedLoadKw: load.trim() === "" ? null : load.trim() },
    });
    if (result.error) {
      setErrors(apiErrors(result.error));
      return;
    }
    refetch({ requestPolicy: "network-only" });
    onDone(`Assigned ${tariffId} to ${device.deviceId} from ${effectiveFrom}.`);
  }

  return (
    <form className="panel" onSubmit={submit} data-testid="assign-tariff">
      <h3>Tariff of {device.name ?? device.deviceId}</h3>
      <ul className="summary">
        {(assignments.data?.tariffAssignments ?? []).map((a) => (
          <li key={`${a.tariffId}-${a.effectiveFrom}`}>
            {a.tariffId} from {a.effectiveFrom}
            {a.sanctionedLoadKw ? `, ${a.sanctionedLoadKw} kW sanctioned` : ""}
          </li>
        ))}
        {assignments.data?.tariffAssignments.length === 0 ? <li>none yet: its months are not billable</li> : null}
      </ul>
      <ErrorList error={assignments.error ?? tariffs.error} />
      {general.length > 0 ? (
        <ul className="errors" role="alert">
          {general.map((e, i) => (
            <li key={i}>{e.message}</li>
          ))}
        </ul>
      ) : null}
      <div className="form" style={{ marginTop: "0.6rem" }}>
        <label className="field">
          <span>Tariff</span>
          <select value={tariffId} onChange={(e) => setTariffId(e.target.value)} required>
            <option value="" disabled>
              Pick a tariff
            </option>
            {(tariffs.data?.tariffs ?? []).map((t) => (
              <option key={t.tariffId} value={t.tariffId}>
                {t.tariffId}
                {t.title ? ` — ${t.title}` : ""}
              </option>
            ))}
          </select>
          {errorAt("tariffId")}
        </label>
        <label className="field">
          <span>From (local day)</span>
          <input type="date" value={effectiveFrom} onChange={(e) => setEffectiveFrom(e.target.value)} required />
          {errorAt("effectiveFrom")}
        </label>
        <label className="field">
          <span>Sanctioned load (kW)</span>
          <input inputMode="decimal" value={load} onChange={(e) => setLoad(e.target.value)} />
          {errorAt("sanctionedLoadKw")}
        </label>
      </div>
      <div className="form-actions" style={{ marginTop: "0.8rem" }}>
        <button className="button" type="submit" disabled={state.fetching}>
          Assign
        </button>
        <button className="button secondary" type="button" onClick={() => onDone("")}>
          Close
        </button>
      </div>
    </form>
  );
}
