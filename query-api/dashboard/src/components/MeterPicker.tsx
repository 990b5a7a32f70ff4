import { useQuery } from "urql";
import { DEVICES } from "../api/queries";
import type { Device } from "../api/types";
import { ErrorList } from "./ErrorList";

const GROUPS: [Device["lifecycle"], string][] = [
  ["REGISTERED", "Registered"],
  ["DISCOVERED", "Discovered (not registered yet)"],
  ["DECOMMISSIONED", "Decommissioned"],
];

interface Props {
  value: string | undefined;
  onChange(deviceId: string): void;
  includeDecommissioned?: boolean;
}

/** The meters this user may see (a customer's own only: the API filters). */
export function useDevices() {
  const [result, refetch] = useQuery<{ devices: { nodes: Device[] } }>({
    query: DEVICES,
    variables: { first: 1000 },
  });
  return { devices: result.data?.devices.nodes ?? [], fetching: result.fetching, error: result.error, refetch };
}

export function MeterPicker({ value, onChange, includeDecommissioned = true }: Props) {
  const { devices, fetching, error } = useDevices();
  const shown = devices.filter((d) => includeDecommissioned || d.lifecycle !== "DECOMMISSIONED");
  return (
    <label className="picker">
      <span>Meter</span>
      <select
        data-testid="meter-picker"
        value={value ?? ""}
        onChange={(event) => onChange(event.target.value)}
        disabled={fetching && shown.length === 0}
      >
        <option value="" disabled>
          {fetching && shown.length === 0 ? "Loading meters…" : shown.length === 0 ? "No meters" : "Pick a meter"}
        </option>
        {value && !shown.some((d) => d.deviceId === value) ? <option value={value}>{value}</option> : null}
        {GROUPS.map(([lifecycle, label]) => {
          const group = shown.filter((d) => d.lifecycle === lifecycle);
          return group.length === 0 ? null : (
            <optgroup key={lifecycle} label={label}>
              {group.map((device) => (
                <option key={device.deviceId} value={device.deviceId}>
                  {device.name ? `${device.name} (${device.deviceId})` : device.deviceId}
                </option>
              ))}
            </optgroup>
          );
        })}
      </select>
      <ErrorList error={error} />
    </label>
  );
}
