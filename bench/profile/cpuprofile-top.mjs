// Sums a V8 CPU profile (node --cpu-prof) by function: self time and inclusive time, in percent of
// the profile. usage: node bench/profile/cpuprofile-top.mjs FILE [self rows] [inclusive rows]
import { readFileSync } from 'node:fs';

const [file, selfRows = '30', inclusiveRows = '40'] = process.argv.slice(2);
const profile = JSON.parse(readFileSync(file, 'utf8'));
const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
const parent = new Map();
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
const selfUs = new Map();
for (const [index, id] of profile.samples.entries())
  selfUs.set(id, (selfUs.get(id) ?? 0) + profile.timeDeltas[index]);
const name = ({ callFrame: frame }) =>
  `${frame.functionName || '(anonymous)'} ${frame.url.split('/').at(-1) ?? ''}:${frame.lineNumber + 1}`;
const self = new Map();
const inclusive = new Map();
let total = 0;
for (const [id, us] of selfUs) {
  total += us;
  const key = name(nodes.get(id));
  self.set(key, (self.get(key) ?? 0) + us);
  const seen = new Set();
  for (let at = id; at !== undefined; at = parent.get(at)) {
    const frame = name(nodes.get(at));
    if (seen.has(frame)) continue;
    seen.add(frame);
    inclusive.set(frame, (inclusive.get(frame) ?? 0) + us);
  }
}
const show = (title, map, rows) => {
  console.log(`--- ${title}`);
  for (const [key, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, Number(rows)))
    console.log(`${((us / total) * 100).toFixed(1).padStart(5)}% ${key}`);
};
console.log(`profile ${(total / 1000).toFixed(0)} ms`);
show('self', self, selfRows);
show('inclusive', inclusive, inclusiveRows);
