// The fleet: every meter the user may see, with status, last seen and firmware; staff
// add, edit and decommission meters. Commands publish device events and the
// processor's projection applies them, so the list is fetched again until the change
// shows (a few hundred milliseconds on the local stack).

import { useEffect, useState } from "react";
import { Link } from "react-router";
import { useMutation, useQuery } from "urql";
import { apiErrors, type ApiError } from "../api/client";
import { DECOMMISSION_DEVICE, REGISTER_DEVICE, UPDATE_DEVICE } from "../api/mutations";
import { DEVICES } from "../api/queries";
import type { Device, Lifecycle } from "../api/types";
import { AssignTariff } from "../components/AssignTariff";
import { DeviceForm, deviceInput, EMPTY_DEVICE, type DeviceInput } from "../components/DeviceForm";
import { ErrorList } from "../components/ErrorList";
import { LastSeen, StatusBadge } from "../components/StatusBadge";
import { useDebounced } from "../lib/debounce";
import { isStaff, useMe } from "../session";

type Editing = { mode: "add" } | { mode: "edit"; device: Device } | { mode: "tariff"; device: Device } | null;

const PAGE_SIZE = 50;

const blankToNull = (value: string) => (value.trim() === "" ? null : value.trim());

export function DevicesPage() {
  const me = useMe();
  const staff = isStaff(me);
  const [lifecycle, setLifecycle] = useState<Lifecycle | "">("");
  // Id, name or location containing this text (the API searches; pages as usual).
  const [searchText, setSearchText] = useState("");
  const search = useDebounced(searchText.trim(), 250);
  // Cursors of the pages before this one (Relay pagination: `after` = previous endCursor).
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  useEffect(() => setCursors([null]), [search]);
  const after = cursors[cursors.length - 1];
  const [result, refetch] = useQuery<{
    devices: { nodes: Device[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } };
  }>({ query: DEVICES, variables: { first: PAGE_SIZE, after, lifecycle: lifecycle || null, search: search || null } });
  const devices = result.data?.devices.nodes ?? [];
  const pageInfo = result.data?.devices.pageInfo;
  const { fetching, error } = result;
  const [editing, setEditing] = useState<Editing>(null);
  const [errors, setErrors] = useState<ApiError[]>([]);
  const [notice, setNotice] = useState<string | null>(null);
  const [refreshUntil, setRefreshUntil] = useState(0);
  const [tick, setTick] = useState(0);
  const [registerState, register] = useMutation(REGISTER_DEVICE);
  const [updateState, update] = useMutation(UPDATE_DEVICE);
  const [, decommission] = useMutation(DECOMMISSION_DEVICE);

  // Fetch again for a few seconds after a command, until the projection applied it.
  useEffect(() => {
    if (Date.now() > refreshUntil) return;
    const timer = setTimeout(() => {
      refetch({ requestPolicy: "network-only" });
      setTick((n) => n + 1);
    }, 700);
    return () => clearTimeout(timer);
  }, [refreshUntil, tick, refetch]);

  async function submit(input: DeviceInput) {
    setErrors([]);
    const common = {
      deviceId: input.deviceId.trim(),
      name: blankToNull(input.name),
      location: blankToNull(input.location),
      tariffId: blankToNull(input.tariffId),
      sanctionedLoadKw: blankToNull(input.sanctionedLoadKw),
      customerId: blankToNull(input.customerId),
    };
    // A discovered meter is completed by registering it.
    const registering = editing?.mode !== "edit" || editing.device.lifecycle === "DISCOVERED";
    const result = !registering
        ? await update({ input: { ...common, timeZone: blankToNull(input.timeZone) } })
        : await register({ input: { ...common, timeZone: input.timeZone.trim() } });
    if (result.error) {
      setErrors(apiErrors(result.error));
      return;
    }
    setNotice(`${registering ? "Registered" : "Updated"} ${common.deviceId}; the list updates once the change is applied.`);
    setEditing(null);
    setRefreshUntil(Date.now() + 8000);
  }

  async function retire(device: Device) {
    const reason = window.prompt(`Decommission ${device.deviceId}? Its history is kept. Reason:`, "replaced");
    if (reason === null) return;
    const result = await decommission({ deviceId: device.deviceId, reason: reason || null });
    if (result.error) {
      setNotice(apiErrors(result.error).map((e) => e.message).join("; "));
      return;
    }
    setNotice(`Decommissioned ${device.deviceId}.`);
    setRefreshUntil(Date.now() + 8000);
  }

  return (
    <section className="page">
      <div className="toolbar spread">
        <h2>Devices</h2>
        {staff && !editing ? (
          <button
            className="button"
            data-testid="add-device"
            onClick={() => {
              setErrors([]);
              setEditing({ mode: "add" });
            }}
          >
            Add a meter
          </button>
        ) : null}
      </div>
      {notice ? (
        <p className="notice" data-testid="devices-notice">
          {notice}
        </p>
      ) : null}
      {editing?.mode === "tariff" ? (
        <AssignTariff
          key={editing.device.deviceId}
          device={editing.device}
          onDone={(message) => {
            setEditing(null);
            if (message) {
              setNotice(message);
              setRefreshUntil(Date.now() + 8000);
            }
          }}
        />
      ) : null}
      {editing && editing.mode !== "tariff" ? (
        <DeviceForm
          key={editing.mode === "edit" ? editing.device.deviceId : "new"}
          initial={editing.mode === "edit" ? deviceInput(editing.device) : EMPTY_DEVICE}
          editing={editing.mode === "edit"}
          errors={errors}
          busy={registerState.fetching || updateState.fetching}
          submitLabel={editing.mode === "edit" ? "Save" : "Register"}
          onSubmit={submit}
          onCancel={() => setEditing(null)}
        />
      ) : null}
      <div className="toolbar">
        <label className="field">
          <span>Show</span>
          <select
            data-testid="lifecycle-filter"
            value={lifecycle}
            onChange={(e) => {
              setLifecycle(e.target.value as Lifecycle | "");
              setCursors([null]);
            }}
          >
            <option value="">every meter</option>
            <option value="REGISTERED">registered</option>
            <option value="DISCOVERED">discovered (to complete)</option>
            <option value="DECOMMISSIONED">decommissioned</option>
          </select>
        </label>
        <label className="field search">
          <span>Find</span>
          <input
            type="search"
            data-testid="device-search"
            placeholder="id, name or location contains…"
            value={searchText}
            onChange={(e) => setSearchText(e.target.value)}
          />
        </label>
        <div className="form-actions pager">
          <button className="button secondary small" disabled={cursors.length === 1} onClick={() => setCursors(cursors.slice(0, -1))}>
            Previous
          </button>
          <span className="muted">page {cursors.length}</span>
          <button
            className="button secondary small"
            disabled={!pageInfo?.hasNextPage}
            onClick={() => pageInfo?.endCursor && setCursors([...cursors, pageInfo.endCursor])}
          >
            Next
          </button>
        </div>
      </div>
      <ErrorList error={error} />
      {fetching && devices.length === 0 ? <p className="hint">Loading…</p> : null}
      {!fetching && devices.length === 0 && result.data ? <p className="hint">{search ? `No meter's id, name or location contains “${search}”.` : "No meters."}</p> : null}
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
              <th>Customer</th>
              {staff ? <th /> : null}
            </tr>
          </thead>
          <tbody>
            {devices.map((device) => (
              <tr key={device.deviceId} data-testid={`device-row-${device.deviceId}`}>
                <td data-label="Meter">
                  <Link to={`/live/${encodeURIComponent(device.deviceId)}`}>{device.name ?? device.deviceId}</Link>
                  {device.name ? <div className="muted">{device.deviceId}</div> : null}
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
                <td data-label="Tariff" title={device.assignedTariff ? `billed on ${device.assignedTariff.tariffId} from ${device.assignedTariff.effectiveFrom}` : undefined}>
                  {device.assignedTariff?.tariffId ?? device.tariffId ?? "—"}
                </td>
                <td data-label="Customer">{device.customerName ?? device.customerId ?? "—"}</td>
                {staff ? (
                  <td data-label="" className="actions">
                    {device.lifecycle !== "DECOMMISSIONED" ? (
                      <>
                        <button
                          className="link-plain"
                          data-testid={`edit-${device.deviceId}`}
                          onClick={() => {
                            setErrors([]);
                            setEditing({ mode: "edit", device });
                          }}
                        >
                          {device.lifecycle === "DISCOVERED" ? "complete" : "edit"}
                        </button>
                        <button
                          className="link-plain"
                          data-testid={`tariff-${device.deviceId}`}
                          onClick={() => setEditing({ mode: "tariff", device })}
                        >
                          tariff
                        </button>
                        <button className="link-button" data-testid={`decommission-${device.deviceId}`} onClick={() => retire(device)}>
                          decommission
                        </button>
                      </>
                    ) : null}
                  </td>
                ) : null}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
