// The status server's dashboard: reads GET /status once a second and draws the last minutes of lag,
// throughput, cycle sizes and folding with uPlot. Nothing is built at run time; the page keeps its
// own history (the site keeps none), so a reload starts the charts afresh.

const pollMs = 1000;
const samplesMax = 600;
const mib = 1024 * 1024;

/** Samples in time order: { t (seconds), status }. */
const history = [];
const charts = new Map();
const state = { samples: 0, charts: 0, lastError: null };
window.cyclerepDashboard = state;

function secondaryNames() {
  const last = history.at(-1);
  return last?.status.role === 'primary' ? last.status.secondaries.map((link) => link.name) : [];
}

/** Rate per second of a running total between consecutive samples (null at the first). */
function rates(read) {
  return history.map((sample, index) => {
    if (index === 0) return null;
    const previous = history[index - 1];
    const seconds = sample.t - previous.t;
    const before = read(previous.status);
    const now = read(sample.status);
    if (seconds <= 0 || !Number.isFinite(before) || !Number.isFinite(now) || now < before) return null;
    return (now - before) / seconds;
  });
}

function linkOf(status, name) {
  return status.secondaries?.find((link) => link.name === name) ?? null;
}

/** Bytes shipped to one secondary so far, or NaN when it is not in this sample (no rate then). */
function shippedOf(status, name) {
  return linkOf(status, name)?.shippedBytes ?? Number.NaN;
}

/** The charts of a primary: each a title, series names and a function giving their values. */
function primaryCharts() {
  const names = secondaryNames();
  return [
    {
      id: 'lag-seconds',
      title: 'Lag (seconds): age of the oldest write a secondary has not stored',
      series: names,
      values: () => names.map((name) => history.map((s) => linkOf(s.status, name)?.lagSeconds ?? null)),
    },
    {
      id: 'lag-bytes',
      title: 'Lag (MiB): acknowledged bytes a secondary has not stored',
      series: names,
      values: () => names.map((name) => history.map((s) => (linkOf(s.status, name)?.lagBytes ?? 0) / mib)),
    },
    {
      id: 'throughput',
      title: 'Throughput (MiB/s): written by the sources, shipped to each secondary',
      series: ['written', ...names.map((name) => `shipped to ${name}`)],
      values: () => [
        rates((s) => s.writtenBytes / mib),
        ...names.map((name) => rates((s) => shippedOf(s, name) / mib)),
      ],
    },
    {
      id: 'cycles',
      title: 'Cycle size (MiB written per closed cycle) and folding (shipped / written)',
      series: ['cycle size', ...names.map((name) => `folding ${name}`)],
      values: () => {
        const written = rates((s) => s.writtenBytes);
        const closedRate = rates((s) => s.closed);
        const cycleSize = written.map((bytes, i) =>
          bytes !== null && closedRate[i] ? bytes / closedRate[i] / mib : null,
        );
        const folding = names.map((name) => {
          const shipped = rates((s) => shippedOf(s, name));
          return shipped.map((bytes, i) => (bytes !== null && written[i] ? bytes / written[i] : null));
        });
        return [cycleSize, ...folding];
      },
    },
  ];
}

function secondaryCharts() {
  return [
    {
      id: 'cycles',
      title: 'Cycles stored and applied',
      series: ['stored', 'applied'],
      values: () => [history.map((s) => s.status.stored), history.map((s) => s.status.applied)],
    },
    {
      id: 'journal',
      title: 'Journal (MiB held)',
      series: ['journal'],
      values: () => [history.map((s) => (s.status.journalBytes ?? 0) / mib)],
    },
  ];
}

const palette = ['#1f6feb', '#12805c', '#b54708', '#8250df', '#b42318', '#0e7490', '#6e7781'];

function drawChart(spec) {
  const data = [history.map((s) => s.t), ...spec.values()];
  const key = `${spec.id}:${spec.series.join(',')}`;
  let entry = charts.get(spec.id);
  if (entry && entry.key !== key) {
    entry.plot.destroy();
    entry.box.remove();
    charts.delete(spec.id);
    entry = undefined;
  }
  if (!entry) {
    const box = document.createElement('div');
    box.className = 'chart';
    box.id = `chart-${spec.id}`;
    const title = document.createElement('h2');
    title.textContent = spec.title;
    box.append(title);
    document.getElementById('charts').append(box);
    const options = {
      width: Math.max(480, box.clientWidth - 16),
      height: 220,
      series: [
        {},
        ...spec.series.map((label, i) => ({ label, stroke: palette[i % palette.length], width: 2 })),
      ],
      axes: [{}, { size: 60 }],
    };
    entry = { key, box, plot: new uPlot(options, data, box) };
    charts.set(spec.id, entry);
    state.charts = charts.size;
  } else {
    entry.plot.setData(data);
  }
}

function cell(text, className) {
  const td = document.createElement('td');
  if (className === 'state') {
    td.className = 'state';
    const badge = document.createElement('span');
    badge.className = text;
    badge.textContent = text;
    td.append(badge);
  } else {
    td.textContent = text;
  }
  return td;
}

function fillTable(status) {
  const head = document.querySelector('#links thead');
  const body = document.querySelector('#links tbody');
  const columns =
    status.role === 'primary'
      ? ['secondary', 'link', 'stored', 'applied', 'lag cycles', 'lag MiB', 'lag s', 'failures', 'recoveries']
      : ['site', 'link', 'stored', 'applied', 'journal MiB'];
  head.replaceChildren(document.createElement('tr'));
  for (const column of columns) {
    const th = document.createElement('th');
    th.textContent = column;
    head.firstChild.append(th);
  }
  const rows =
    status.role === 'primary'
      ? status.secondaries.map((link) => [
          link.name,
          [link.link, 'state'],
          link.stored,
          link.applied,
          link.lagCycles,
          (link.lagBytes / mib).toFixed(1),
          link.lagSeconds.toFixed(1),
          link.failures,
          link.recoveries,
        ])
      : [
          [
            status.name,
            [status.link, 'state'],
            status.stored,
            status.applied,
            ((status.journalBytes ?? 0) / mib).toFixed(1),
          ],
        ];
  body.replaceChildren(
    ...rows.map((values) => {
      const tr = document.createElement('tr');
      for (const value of values)
        tr.append(Array.isArray(value) ? cell(value[0], value[1]) : cell(String(value)));
      return tr;
    }),
  );
}

function showHeader(status) {
  document.getElementById('site').textContent =
    status.role === 'primary' ? `${status.group} / primary` : `${status.group} / ${status.name}`;
  document.title = `cyclerep ${document.getElementById('site').textContent}`;
  document.getElementById('summary').textContent =
    status.role === 'primary'
      ? `capture ${status.capture}, closed ${status.closed}, journal ${((status.journalBytes ?? 0) / mib).toFixed(1)} MiB`
      : `stored ${status.stored}, applied ${status.applied}`;
  const fault = document.getElementById('fault');
  fault.hidden = !status.fault;
  fault.textContent = status.fault ? `storage fault: ${status.fault.kind}: ${status.fault.message}` : '';
}

async function poll() {
  try {
    const response = await fetch('status', { cache: 'no-store' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const status = await response.json();
    history.push({ t: Date.now() / 1000, status });
    if (history.length > samplesMax) history.shift();
    state.samples += 1;
    state.lastError = null;
    showHeader(status);
    fillTable(status);
    for (const spec of status.role === 'primary' ? primaryCharts() : secondaryCharts()) drawChart(spec);
    document.getElementById('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    state.lastError = String(error);
    document.getElementById('updated').textContent = `cannot read status: ${error}`;
  }
}

poll();
setInterval(poll, pollMs);
