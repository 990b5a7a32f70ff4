import type { Device } from "../api/types";
import { ago, formatDateTime } from "../lib/time";

export function StatusBadge({ device }: { device: Pick<Device, "online" | "lifecycle"> }) {
  if (device.lifecycle === "DECOMMISSIONED") return <span className="badge badge-off" data-testid="status-badge">decommissioned</span>;
  if (device.online === null) return <span className="badge badge-unknown" data-testid="status-badge">no status yet</span>;
  return device.online ? (
    <span className="badge badge-on" data-testid="status-badge">online</span>
  ) : (
    <span className="badge badge-off" data-testid="status-badge">offline</span>
  );
}

export function LastSeen({ device }: { device: Pick<Device, "lastSeenAt" | "timeZone"> }) {
  return (
    <span className="last-seen" data-testid="last-seen" title={device.lastSeenAt ?? undefined}>
      last seen {ago(device.lastSeenAt)}
      {device.lastSeenAt ? ` (${formatDateTime(device.lastSeenAt, device.timeZone)})` : ""}
    </span>
  );
}
