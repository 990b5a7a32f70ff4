// Register or edit a meter. The API publishes DeviceRegistered / DeviceUpdated and the
// processor's projection applies them, so the list shows the change a moment later.
// Errors the API names a field for (`extensions.field`: `timeZone`, `deviceId`, …)
// are shown under that field.

import { useState, type ReactNode } from "react";
import type { ApiError } from "../api/client";
import type { Device } from "../api/types";

export interface DeviceInput {
  deviceId: string;
  name: string;
  location: string;
  timeZone: string;
  tariffId: string;
  sanctionedLoadKw: string;
  customerId: string;
}

export const EMPTY_DEVICE: DeviceInput = {
  deviceId: "",
  name: "",
  location: "",
  timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
  tariffId: "",
  sanctionedLoadKw: "",
  customerId: "",
};

export function deviceInput(device: Device & { customerId?: string | null }): DeviceInput {
  return {
    deviceId: device.deviceId,
    name: device.name ?? "",
    location: device.location ?? "",
    timeZone: device.timeZone,
    tariffId: device.tariffId ?? "",
    sanctionedLoadKw: device.sanctionedLoadKw ?? "",
    customerId: device.customerId ?? "",
  };
}

interface Props {
  initial: DeviceInput;
  editing: boolean;
  errors: ApiError[];
  busy: boolean;
  submitLabel: string;
  onSubmit(input: DeviceInput): void;
  onCancel(): void;
}

const FIELDS: { key: keyof DeviceInput; label: string; hint?: string; decimal?: boolean }[] = [
  { key: "deviceId", label: "Meter id", hint: "as on its MQTT topic" },
  { key: "name", label: "Name" },
  { key: "location", label: "Location" },
  { key: "timeZone", label: "Time zone", hint: "IANA, e.g. Europe/London" },
  { key: "tariffId", label: "Tariff" },
  { key: "sanctionedLoadKw", label: "Sanctioned load (kW)", decimal: true },
  { key: "customerId", label: "Customer" },
];

export function DeviceForm({ initial, editing, errors, busy, submitLabel, onSubmit, onCancel }: Props) {
  const [input, setInput] = useState<DeviceInput>(initial);
  const fieldKeys = new Set<string>(FIELDS.map((f) => f.key));
  const errorAt = (key: string): ReactNode =>
    errors
      .filter((e) => e.field === key || e.field?.startsWith(`${key}.`))
      .map((e, i) => (
        <span key={i} className="field-error" role="alert" data-testid={`error-${key}`}>
          {e.message}
        </span>
      ));
  const general = errors.filter((e) => !e.field || !fieldKeys.has(e.field.split(".")[0]));
  return (
    <form
      className="panel"
      data-testid="device-form"
      onSubmit={(event) => {
        event.preventDefault();
        onSubmit(input);
      }}
    >
      <h3>{editing ? `Edit ${initial.deviceId}` : "Add a meter"}</h3>
      {general.length > 0 ? (
        <ul className="errors" role="alert">
          {general.map((e, i) => (
            <li key={i}>
              {e.message}
              {e.code ? <code>{e.code}</code> : null}
            </li>
          ))}
        </ul>
      ) : null}
      <div className="form">
        {FIELDS.map((field) => (
          <label className="field" key={field.key}>
            <span>
              {field.label}
              {field.hint ? <span className="muted"> ({field.hint})</span> : null}
            </span>
            <input
              name={field.key}
              inputMode={field.decimal ? "decimal" : undefined}
              value={input[field.key]}
              readOnly={editing && field.key === "deviceId"}
              required={field.key === "deviceId" || field.key === "timeZone"}
              onChange={(e) => setInput({ ...input, [field.key]: e.target.value })}
            />
            {errorAt(field.key)}
          </label>
        ))}
      </div>
      <div className="form-actions" style={{ marginTop: "0.8rem" }}>
        <button className="button" type="submit" disabled={busy} data-testid="device-submit">
          {busy ? "Sending…" : submitLabel}
        </button>
        <button className="button secondary" type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
