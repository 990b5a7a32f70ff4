// The fleet: every meter the user may see, with status, last seen and firmware.

import { Link } from "react-router";
import { useDevices } from "../components/MeterPicker";
import { ErrorList } from "../components/ErrorList";
import { LastSeen, StatusBadge } from "../components/StatusBadge";

export function DevicesPage() {
  const { devices, fetching, error } = useDevices();
  return (
    <section className="page">
      <h2>Devices</h2>
      <ErrorList error={error} />
      {fetching && devices.length === 0 ? <p className="hint">Loading…</p> : null}
      <div className="table-wrap">
        <table className="table" data-testid="devices-table">
          <thead>
            <tr>
              <th>Meter</th>
              <th>Status</th>
              <th>Last seen</th>
              <th>Firmware</th>
              <th>Time zone</th>
              <th>Tariff</th>
            </tr>
          </thead>
          <tbody>
            {devices.map((device) => (
              <tr key={device.deviceId} data-testid={`device-row-${device.deviceId}`}>
                <td data-label="Meter">
                  <Link to={`/live/${encodeURIComponent(device.deviceId)}`}>{device.deviceId}</Link>
                  {device.name ? <div className="muted">{device.name}</div> : null}
                  {device.location ? <div className="muted">{device.location}</div> : null}
                </td>
                <td data-label="Status">
                  <StatusBadge device={device} />
                  {device.lifecycle === "DISCOVERED" ? <span className="badge badge-unknown">discovered</span> : null}
                </td>
                <td data-label="Last seen">
                  <LastSeen device={device} />
                </td>
                <td data-label="Firmware">{device.firmwareVersion ?? "—"}</td>
                <td data-label="Time zone">{device.timeZone}</td>
                <td data-label="Tariff">{device.tariffId ?? "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
