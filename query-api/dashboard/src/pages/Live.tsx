// One meter, live: the picker, the four cards, status, the 24-hour power chart, the
// 30-day consumption chart and the bill projection of the month in progress. The
// first values come from queries; after that, subscriptions push every new reading,
// status change and projection (no polling, no reload).

import { useEffect, useMemo, useRef, useState } from "react";
import { useNavigate, useParams } from "react-router";
import { useQuery } from "urql";
import { useDeviceStatus, useLiveBillProjection, useLiveReadings } from "../api/live";
import { BILL_PROJECTION, DAILY_ENERGY, DEVICE, LATEST_READING, READING_SERIES } from "../api/queries";
import type { BillProjection, CardReading, DailyEnergy, Device, SeriesPoint } from "../api/types";
import { Chart } from "../components/Chart";
import { ErrorList } from "../components/ErrorList";
import { MeterPicker } from "../components/MeterPicker";
import { LastSeen, StatusBadge } from "../components/StatusBadge";
import { groupThousands, roundDecimal, sumDecimals } from "../lib/decimal";
import { addDays, formatDateTime, formatMonth, formatTime, localDate } from "../lib/time";

const DAY_MS = 24 * 3600 * 1000;

/** A share 0..1 as a percentage, with a decimal below 10 % so a month's start is not "0%". */
function percent(share: string): string {
  const value = Number(share) * 100;
  return `${value < 10 ? value.toFixed(1) : value.toFixed(0)}%`;
}

export function LivePage() {
  const { deviceId } = useParams();
  const navigate = useNavigate();
  return (
    <section className="page">
      <div className="toolbar">
        <MeterPicker value={deviceId} onChange={(id) => navigate(`/live/${encodeURIComponent(id)}`)} />
      </div>
      {deviceId ? <MeterLive key={deviceId} deviceId={deviceId} /> : <p className="hint">Pick a meter to see it live.</p>}
    </section>
  );
}

function MeterLive({ deviceId }: { deviceId: string }) {
  const [deviceResult] = useQuery<{ device: Device | null }>({ query: DEVICE, variables: { deviceId } });
  const { readings: live, error: liveError } = useLiveReadings(deviceId);
  const { status, error: statusError } = useDeviceStatus(deviceId);
  const device = deviceResult.data?.device;
  if (deviceResult.error && !device) return <ErrorList error={deviceResult.error} />;
  if (!device) return <p className="hint">Loading {deviceId}…</p>;

  const newestLive = live.length > 0 ? live[live.length - 1] : null;
  // What the subscriptions pushed wins over what the queries loaded.
  const shown: Device = {
    ...device,
    ...(status ? { online: status.online, statusChangedAt: status.at } : {}),
    ...(newestLive
      ? {
          lastSeenAt: new Date().toISOString(),
          newestReadingAt:
            !device.newestReadingAt || newestLive.ts > device.newestReadingAt ? newestLive.ts : device.newestReadingAt,
        }
      : {}),
  };
  return (
    <>
      <div className="status-row">
        <h2>{device.name ?? device.deviceId}</h2>
        <StatusBadge device={shown} />
        <LastSeen device={shown} />
        <span className="muted">
          {device.timeZone}
          {device.firmwareVersion ? ` · firmware ${device.firmwareVersion}` : ""}
        </span>
      </div>
      <ErrorList error={liveError ?? statusError} />
      <LiveCards device={device} live={newestLive} />
      <div className="grid-2">
        <PowerChart device={device} live={live} />
        <ConsumptionChart device={device} />
      </div>
      <ProjectionPanel device={device} />
    </>
  );
}

function LiveCards({ device, live }: { device: Device; live: CardReading | null }) {
  const [result] = useQuery<{ latestReading: CardReading | null }>({
    query: LATEST_READING,
    variables: { deviceId: device.deviceId },
  });
  const loaded = result.data?.latestReading ?? null;
  const reading = live && (!loaded || live.ts >= loaded.ts) ? live : loaded;
  // Cards flash when a live reading changes them.
  const [flash, setFlash] = useState(0);
  const lastTs = useRef<string | null>(null);
  useEffect(() => {
    if (live && lastTs.current !== null && live.ts !== lastTs.current) setFlash((n) => n + 1);
    lastTs.current = live?.ts ?? lastTs.current ?? "";
  }, [live]);
  return (
    <div className="cards" data-testid="live-cards" key={flash}>
      <Card flash={flash > 0} label="Voltage" value={reading ? reading.voltage.toFixed(1) : "—"} unit="V" testId="card-voltage" />
      <Card flash={flash > 0} label="Current" value={reading ? reading.current.toFixed(2) : "—"} unit="A" testId="card-current" />
      <Card flash={flash > 0} label="Power" value={reading ? groupThousands(reading.powerW.toFixed(0)) : "—"} unit="W" testId="card-power" />
      <Card
        flash={flash > 0}
        label="Energy (meter)"
        value={reading ? groupThousands(roundDecimal(reading.counterKwh, 3)) : "—"}
        unit="kWh"
        testId="card-energy"
      />
      <p className="cards-at muted" data-testid="reading-at">
        {reading ? `reading of ${formatDateTime(reading.ts, device.timeZone)}` : result.fetching ? "loading…" : "no readings yet"}
        {live ? " · live" : ""}
      </p>
      <ErrorList error={result.error} />
    </div>
  );
}

function Card({ label, value, unit, testId, flash }: { label: string; value: string; unit: string; testId: string; flash: boolean }) {
  return (
    <div className={flash ? "card flash" : "card"} data-testid={testId}>
      <span className="card-label">{label}</span>
      <span className="card-value">
        <span data-testid={`${testId}-value`}>{value}</span> <small>{unit}</small>
      </span>
    </div>
  );
}

/**
 * Average power per bucket (server-side downsampling) over the 24 hours up to the
 * newest reading (the replayed data is years old, so "now" would be empty), with
 * live readings appended as they arrive.
 */
function PowerChart({ device, live }: { device: Device; live: CardReading[] }) {
  const [end] = useState(() =>
    device.newestReadingAt ? new Date(new Date(device.newestReadingAt).getTime() + 1) : new Date(),
  );
  const start = new Date(end.getTime() - DAY_MS);
  const [result] = useQuery<{ readingSeries: { bucketSeconds: number; points: SeriesPoint[] } }>({
    query: READING_SERIES,
    variables: { deviceId: device.deviceId, from: start.toISOString(), to: end.toISOString(), maxPoints: 288 },
  });
  const series = result.data?.readingSeries;
  const points = useMemo(() => {
    const loaded = (series?.points ?? []).map((p) => ({ at: p.bucketStart, powerW: p.powerWAvg }));
    const after = live.filter((r) => r.ts >= end.toISOString()).map((r) => ({ at: r.ts, powerW: r.powerW }));
    return [...loaded, ...after];
  }, [series, live, end]);
  const config = useMemo(
    () => ({
      type: "line" as const,
      data: {
        labels: points.map((p) => formatTime(p.at, device.timeZone)),
        datasets: [
          {
            label: "Power (W)",
            data: points.map((p) => p.powerW),
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
    [points, device.timeZone],
  );
  return (
    <figure className="panel">
      <figcaption>
        Power, 24 hours to {formatDateTime(end.toISOString(), device.timeZone)}
        <span className="muted">
          {" "}
          · {series ? `${series.bucketSeconds / 60}-min average` : "…"}
          {points.length > (series?.points.length ?? 0) ? `, ${points.length - (series?.points.length ?? 0)} live` : ""}
        </span>
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
  const days = result.data?.dailyEnergy;
  const config = useMemo(() => {
    const byDate = new Map((days ?? []).map((d) => [d.localDate, d.energyKwh]));
    const labels = Array.from({ length: 30 }, (_, i) => addDays(fromDate, i));
    return {
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
    };
  }, [days, fromDate]);
  const total = days ? sumDecimals(days.map((d) => d.energyKwh), 6) : null;
  return (
    <figure className="panel">
      <figcaption>
        Daily consumption, {fromDate} to {toDate}
        <span className="muted">
          {" "}
          · total{" "}
          <strong data-testid="consumption-total" data-exact-kwh={total ?? ""}>
            {total ? groupThousands(roundDecimal(total, 3)) : "…"}
          </strong>{" "}
          kWh
        </span>
      </figcaption>
      <Chart config={config} label="Daily consumption over 30 days" testId="consumption-chart" />
      <ErrorList error={result.error} />
    </figure>
  );
}

/** The month in progress priced as the invoice will be, kept live by subscription. */
function ProjectionPanel({ device }: { device: Device }) {
  const [result] = useQuery<{ billProjection: BillProjection }>({
    query: BILL_PROJECTION,
    variables: { deviceId: device.deviceId },
  });
  const unavailable = !!result.error && !result.data;
  const { projection: live } = useLiveBillProjection(device.deviceId, unavailable);
  const projection = live ?? result.data?.billProjection;
  return (
    <section className="panel" data-testid="projection">
      <h3>Bill projection{projection ? `, ${formatMonth(projection.month)}` : ""}</h3>
      {unavailable ? (
        <ErrorList error={result.error} />
      ) : !projection ? (
        <p className="hint">Loading…</p>
      ) : (
        <div className="projection">
          <div className="figure">
            <span className="card-label">Projected at month end</span>
            <span className="card-value" data-testid="projected-total">
              {projection.currency} {groupThousands(roundDecimal(projection.projectedTotal, 2))}
            </span>
            <span className="muted">
              {roundDecimal(projection.projectedEnergyKwh, 1)} kWh projected · {roundDecimal(projection.energySoFarKwh, 3)} kWh
              so far · {percent(projection.elapsedShare)} of the month elapsed
            </span>
          </div>
          <div className="figure">
            <span className="card-label">Before the next slab</span>
            <span className="card-value" data-testid="kwh-to-next-slab">
              {projection.kwhToNextSlab !== null ? `${roundDecimal(projection.kwhToNextSlab, 1)} kWh` : "—"}
            </span>
            <span className="muted">
              {projection.slabName
                ? `now in slab ${projection.slabName}${projection.slabRate ? ` at ${projection.slabRate}/kWh` : ""}`
                : "this tariff has no slabs"}
              {projection.nextSlabLimitKwh ? `; next limit ${roundDecimal(projection.nextSlabLimitKwh, 1)} kWh` : ""}
            </span>
          </div>
          <p className="muted">
            As of {formatDateTime(projection.asOf, device.timeZone)} · tariff {projection.tariffId}
            {live ? " · live" : ""}
          </p>
        </div>
      )}
    </section>
  );
}
