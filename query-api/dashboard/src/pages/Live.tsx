// One meter, live: the picker, the four cards, status, the 24-hour power chart and the
// 30-day consumption chart.

import { useMemo } from "react";
import { useNavigate, useParams } from "react-router";
import { useQuery } from "urql";
import { DAILY_ENERGY, DEVICE, READINGS } from "../api/queries";
import type { DailyEnergy, Device, Reading } from "../api/types";
import { Chart } from "../components/Chart";
import { ErrorList } from "../components/ErrorList";
import { MeterPicker } from "../components/MeterPicker";
import { LastSeen, StatusBadge } from "../components/StatusBadge";
import { groupThousands, roundDecimal, sumDecimals } from "../lib/decimal";
import { addDays, formatDateTime, formatTime, localDate } from "../lib/time";

const DAY_MS = 24 * 3600 * 1000;

export function LivePage() {
  const { deviceId } = useParams();
  const navigate = useNavigate();
  return (
    <section className="page">
      <div className="toolbar">
        <MeterPicker value={deviceId} onChange={(id) => navigate(`/live/${encodeURIComponent(id)}`)} />
      </div>
      {deviceId ? <MeterLive deviceId={deviceId} /> : <p className="hint">Pick a meter to see it live.</p>}
    </section>
  );
}

function MeterLive({ deviceId }: { deviceId: string }) {
  const [deviceResult] = useQuery<{ device: Device | null }>({ query: DEVICE, variables: { deviceId } });
  const device = deviceResult.data?.device;
  if (deviceResult.error && !device) return <ErrorList error={deviceResult.error} />;
  if (!device) return <p className="hint">Loading {deviceId}…</p>;
  return (
    <>
      <div className="status-row">
        <h2>{device.name ?? device.deviceId}</h2>
        <StatusBadge device={device} />
        <LastSeen device={device} />
        <span className="muted">
          {device.timeZone}
          {device.firmwareVersion ? ` · firmware ${device.firmwareVersion}` : ""}
        </span>
      </div>
      <LiveCards device={device} />
      <div className="grid-2">
        <PowerChart device={device} />
        <ConsumptionChart device={device} />
      </div>
    </>
  );
}

function LiveCards({ device }: { device: Device }) {
  const at = device.newestReadingAt;
  const [result] = useQuery<{ readings: Reading[] }>({
    query: READINGS,
    pause: !at,
    variables: at
      ? { deviceId: device.deviceId, from: at, to: new Date(new Date(at).getTime() + 1).toISOString(), limit: 1 }
      : undefined,
  });
  const reading = result.data?.readings[0];
  return (
    <div className="cards" data-testid="live-cards">
      <Card label="Voltage" value={reading ? reading.voltage.toFixed(1) : "—"} unit="V" testId="card-voltage" />
      <Card label="Current" value={reading ? reading.current.toFixed(2) : "—"} unit="A" testId="card-current" />
      <Card label="Power" value={reading ? groupThousands(reading.powerW.toFixed(0)) : "—"} unit="W" testId="card-power" />
      <Card
        label="Energy (meter)"
        value={reading ? groupThousands(roundDecimal(reading.counterKwh, 3)) : "—"}
        unit="kWh"
        testId="card-energy"
      />
      <p className="cards-at muted" data-testid="reading-at">
        {reading ? `reading of ${formatDateTime(reading.ts, device.timeZone)}` : at ? "loading…" : "no readings yet"}
      </p>
      <ErrorList error={result.error} />
    </div>
  );
}

function Card({ label, value, unit, testId }: { label: string; value: string; unit: string; testId: string }) {
  return (
    <div className="card" data-testid={testId}>
      <span className="card-label">{label}</span>
      <span className="card-value">
        <span data-testid={`${testId}-value`}>{value}</span> <small>{unit}</small>
      </span>
    </div>
  );
}

/** The 24 hours up to the newest reading (the replayed data is years old, so "now" would be empty). */
function PowerChart({ device }: { device: Device }) {
  const end = device.newestReadingAt ? new Date(new Date(device.newestReadingAt).getTime() + 1) : new Date();
  const start = new Date(end.getTime() - DAY_MS);
  const [result] = useQuery<{ readings: Reading[] }>({
    query: READINGS,
    variables: { deviceId: device.deviceId, from: start.toISOString(), to: end.toISOString(), limit: 2000 },
  });
  const readings = result.data?.readings ?? [];
  const config = useMemo(
    () => ({
      type: "line" as const,
      data: {
        labels: readings.map((r) => formatTime(r.ts, device.timeZone)),
        datasets: [
          {
            label: "Power (W)",
            data: readings.map((r) => r.powerW),
            borderColor: "#0f5c8c",
            backgroundColor: "rgba(15, 92, 140, 0.12)",
            fill: true,
            pointRadius: 0,
            borderWidth: 2,
            tension: 0.2,
          },
        ],
      },
      options: {
        scales: { y: { beginAtZero: true, title: { display: true, text: "W" } }, x: { ticks: { maxTicksLimit: 8 } } },
        plugins: { tooltip: { intersect: false, mode: "index" as const } },
      },
    }),
    [readings, device.timeZone],
  );
  return (
    <figure className="panel">
      <figcaption>
        Power, 24 hours to {formatDateTime(end.toISOString(), device.timeZone)}
        <span className="muted"> · {readings.length} readings</span>
      </figcaption>
      <Chart config={config} label="Power over the last 24 hours" testId="power-chart" />
      <ErrorList error={result.error} />
    </figure>
  );
}

/** Daily kWh from the daily rollups (the same ones invoices are priced from). */
function ConsumptionChart({ device }: { device: Device }) {
  const toDate = localDate(device.newestReadingAt ?? new Date().toISOString(), device.timeZone);
  const fromDate = addDays(toDate, -29);
  const [result] = useQuery<{ dailyEnergy: DailyEnergy[] }>({
    query: DAILY_ENERGY,
    variables: { deviceId: device.deviceId, fromDate, toDate },
  });
  const days = result.data?.dailyEnergy ?? [];
  const byDate = new Map(days.map((d) => [d.localDate, d.energyKwh]));
  const labels = Array.from({ length: 30 }, (_, i) => addDays(fromDate, i));
  const total = sumDecimals(
    days.map((d) => d.energyKwh),
    6,
  );
  const config = useMemo(
    () => ({
      type: "bar" as const,
      data: {
        labels: labels.map((d) => d.slice(5)),
        datasets: [
          {
            label: "kWh",
            data: labels.map((d) => Number(byDate.get(d) ?? 0)),
            backgroundColor: "#2f8f5b",
            borderRadius: 2,
          },
        ],
      },
      options: {
        scales: { y: { beginAtZero: true, title: { display: true, text: "kWh" } }, x: { ticks: { maxTicksLimit: 10 } } },
      },
    }),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [days, fromDate],
  );
  return (
    <figure className="panel">
      <figcaption>
        Daily consumption, {fromDate} to {toDate}
        <span className="muted">
          {" "}
          · total <strong data-testid="consumption-total">{total}</strong> kWh
        </span>
      </figcaption>
      <Chart config={config} label="Daily consumption over 30 days" testId="consumption-chart" />
      <ErrorList error={result.error} />
    </figure>
  );
}
