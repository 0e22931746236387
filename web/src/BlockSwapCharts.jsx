// BlockSwap drawn from the run's memory reports: a timeline of one forward pass (a lane for the
// copy stream, one for compute's waits, one for compute; a bar per unit) from BlockSwap's report
// with `debug`, and memory over the run from every report. Chart.js draws them.

import React, { useEffect, useMemo, useRef } from 'react';
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LineController,
  LineElement,
  LinearScale,
  PointElement,
  Tooltip,
} from 'chart.js';

Chart.register(BarController, BarElement, CategoryScale, Legend, LineController, LineElement, LinearScale, PointElement, Tooltip);

const LANES = ['copy', 'wait', 'compute'];
const COLOURS = { copy: '#5b8def', wait: '#e0533d', compute: '#4caf7d' };
const MIB = 2 ** 20;

/** A chart of `config` on a canvas; after each draw, `describe(chart)` gives data attributes
 * for the container (what was drawn, for tests and tools). */
function ChartCanvas({ name, config, describe }) {
  const container = useRef(null);
  const canvas = useRef(null);
  useEffect(() => {
    const chart = new Chart(canvas.current, config);
    Object.assign(container.current.dataset, describe(chart));
    return () => chart.destroy();
  }, [config, describe]);
  return (
    <div className="chart" data-chart={name} ref={container}>
      <canvas ref={canvas} />
    </div>
  );
}

const describeTimeline = (chart) => ({
  copyBars: String(chart.getDatasetMeta(0).data.length),
  computeBars: String(chart.getDatasetMeta(2).data.length),
});

/** One forward pass: each unit's copy, the compute stream's wait for it, and its compute. */
function TimelineChart({ timeline }) {
  const config = useMemo(() => {
    const bars = (lane) =>
      timeline.units.filter((u) => u[lane] && u[lane][1] >= u[lane][0]).map((u) => ({ x: u[lane], y: lane, unit: u.unit }));
    return {
      type: 'bar',
      data: {
        datasets: LANES.map((lane) => ({
          label: lane,
          data: bars(lane),
          backgroundColor: COLOURS[lane],
          grouped: false,
          // Copies of small units take microseconds: each still shows.
          minBarLength: 2,
          barPercentage: 0.9,
          categoryPercentage: 0.9,
        })),
      },
      options: {
        indexAxis: 'y',
        animation: false,
        maintainAspectRatio: false,
        scales: {
          x: { type: 'linear', title: { display: true, text: 'ms from the start of the pass' } },
          y: { type: 'category', labels: LANES },
        },
        plugins: {
          tooltip: {
            callbacks: { label: (c) => `${c.raw.unit}: ${c.raw.x[0].toFixed(2)} to ${c.raw.x[1].toFixed(2)} ms` },
          },
        },
      },
    };
  }, [timeline]);
  return <ChartCanvas name="timeline" config={config} describe={describeTimeline} />;
}

const describeMemory = (chart) => ({ points: String(chart.getDatasetMeta(0).data.length) });

/** Memory over the run: each report's figures at the time it came; on a GPU, the device's
 * allocation split into what BlockSwap accounts for (its weights, its transfer ring) and the
 * rest (activations and other models). */
function MemoryChart({ samples }) {
  const config = useMemo(() => {
    const start = samples[0].at;
    const at = (s) => (s.at - start) / 1000;
    const series = (label, value, colour) => ({
      label,
      data: samples.filter((s) => value(s.report) !== undefined).map((s) => ({ x: at(s), y: value(s.report) / MIB })),
      borderColor: colour,
      backgroundColor: colour,
    });
    const part = (name) => (r) => r.device_parts?.find(([kind]) => kind === name)?.[1];
    const rest = (r) => {
      if (r.device_allocated_bytes === undefined || !r.device_parts?.length) return undefined;
      return Math.max(0, r.device_allocated_bytes - r.device_parts.reduce((sum, [, bytes]) => sum + bytes, 0));
    };
    const datasets = [
      series('host resident', (r) => r.host_resident_bytes, '#8a63d2'),
      series('device allocated', (r) => r.device_allocated_bytes, '#e0533d'),
      series('weights kept on the device', part('weights kept on the device'), '#5b8def'),
      series('transfer ring', part('transfer ring'), '#4caf7d'),
      series('activations and other models', rest, '#f0a030'),
    ].filter((d, i) => i === 0 || d.data.length);
    return {
      type: 'line',
      data: { datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: {
          x: { type: 'linear', title: { display: true, text: 's into the run' } },
          y: { type: 'linear', title: { display: true, text: 'MiB' } },
        },
      },
    };
  }, [samples]);
  return <ChartCanvas name="memory" config={config} describe={describeMemory} />;
}

/** The charts of the run so far: the latest BlockSwap timeline, and memory over the run. */
export function BlockSwapCharts({ samples }) {
  const timeline = [...samples].reverse().find((s) => s.report.timeline?.units?.length)?.report.timeline;
  if (!samples.length) return null;
  return (
    <section className="charts" data-panel="charts">
      {timeline && (
        <>
          <h3>BlockSwap: one forward pass</h3>
          <TimelineChart timeline={timeline} />
        </>
      )}
      <h3>Memory over the run</h3>
      <MemoryChart samples={samples} />
    </section>
  );
}
