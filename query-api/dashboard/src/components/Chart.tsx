// A thin React wrapper over Chart.js: one canvas, the chart made once and updated in
// place when its data changes (no flicker when a live reading arrives).

import { useEffect, useRef } from "react";
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart as ChartJs,
  Filler,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
  type ChartConfiguration,
} from "chart.js";

ChartJs.register(
  BarController,
  BarElement,
  CategoryScale,
  Filler,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
);
ChartJs.defaults.font.family = getComputedStyle(document.documentElement).fontFamily || "system-ui";
ChartJs.defaults.color = "#44505c";

interface Props {
  config: ChartConfiguration<"bar" | "line", number[], string>;
  label: string;
  testId?: string;
}

export function Chart({ config, label, testId }: Props) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<ChartJs<"bar" | "line", number[], string> | null>(null);

  useEffect(() => {
    if (!canvas.current) return;
    chart.current = new ChartJs(canvas.current, {
      ...config,
      options: { ...config.options, responsive: true, maintainAspectRatio: false, animation: false },
    });
    return () => {
      chart.current?.destroy();
      chart.current = null;
    };
    // Made once per chart type; data updates go through the effect below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [config.type]);

  useEffect(() => {
    const current = chart.current;
    if (!current) return;
    current.data = config.data;
    if (config.options) current.options = { ...config.options, responsive: true, maintainAspectRatio: false, animation: false };
    current.update("none");
  }, [config]);

  return (
    <div className="chart" data-testid={testId}>
      <canvas ref={canvas} role="img" aria-label={label} />
    </div>
  );
}
