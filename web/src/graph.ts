// A directed acyclic graph drawn as SVG, left to right: nodes in layers by their longest path
// from a source, ordered within a layer by their predecessors' positions. Used by lineage and
// pipeline runs. Each node may be a link.
import { h, s } from './dom';

export interface GNode {
  id: string;
  label: string;
  sub?: string;
  href?: string;
  cls?: string;
  title?: string;
}
export interface GEdge {
  src: string;
  dst: string;
  label?: string;
  dashed?: boolean;
}

const W = 190;
const H = 50;
const GX = 70;
const GY = 22;

export function dag(nodes: GNode[], edges: GEdge[], opts: { testid?: string } = {}): HTMLElement {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const es = edges.filter((e) => byId.has(e.src) && byId.has(e.dst) && e.src !== e.dst);
  const preds = new Map<string, string[]>();
  const succs = new Map<string, string[]>();
  for (const n of nodes) {
    preds.set(n.id, []);
    succs.set(n.id, []);
  }
  for (const e of es) {
    preds.get(e.dst)!.push(e.src);
    succs.get(e.src)!.push(e.dst);
  }
  // Layers: longest path from a source (Kahn's order; a cycle's rest goes last).
  const layer = new Map<string, number>();
  const indeg = new Map(nodes.map((n) => [n.id, preds.get(n.id)!.length]));
  const queue = nodes.filter((n) => indeg.get(n.id) === 0).map((n) => n.id);
  for (const id of queue) layer.set(id, 0);
  while (queue.length) {
    const id = queue.shift()!;
    for (const d of succs.get(id)!) {
      layer.set(d, Math.max(layer.get(d) ?? 0, (layer.get(id) ?? 0) + 1));
      indeg.set(d, indeg.get(d)! - 1);
      if (indeg.get(d) === 0) queue.push(d);
    }
  }
  let maxLayer = 0;
  for (const v of layer.values()) maxLayer = Math.max(maxLayer, v);
  for (const n of nodes) if (!layer.has(n.id)) layer.set(n.id, ++maxLayer);
  const layers: string[][] = [];
  for (const n of nodes) {
    const l = layer.get(n.id)!;
    (layers[l] ??= []).push(n.id);
  }
  const pos = new Map<string, { x: number; y: number }>();
  layers.forEach((ids, l) => {
    if (l > 0) {
      const bary = (id: string) => {
        const ps = preds.get(id)!.map((p) => pos.get(p)?.y).filter((y): y is number => y !== undefined);
        return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : 1e9;
      };
      ids.sort((a, b) => bary(a) - bary(b));
    }
    ids.forEach((id, i) => pos.set(id, { x: 10 + l * (W + GX), y: 10 + i * (H + GY) }));
  });
  const width = 20 + layers.length * (W + GX) - GX;
  const height = 20 + Math.max(1, ...layers.map((l) => l?.length ?? 0)) * (H + GY) - GY;
  const svg = s('svg', { class: 'dag', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'data-testid': opts.testid });
  const defs = s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, s('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#7a8599' })));
  svg.appendChild(defs);
  for (const e of es) {
    const a = pos.get(e.src)!;
    const b = pos.get(e.dst)!;
    const x1 = a.x + W;
    const y1 = a.y + H / 2;
    const x2 = b.x;
    const y2 = b.y + H / 2;
    const mx = (x1 + x2) / 2;
    const back = x2 <= x1;
    const d = back ? `M ${x1} ${y1} C ${x1 + 60} ${y1 - 60}, ${x2 - 60} ${y2 - 60}, ${x2} ${y2}` : `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`;
    const path = s('path', { d, class: `edge${e.dashed ? ' dashed' : ''}`, 'marker-end': 'url(#arrow)' });
    if (e.label) path.appendChild(s('title', {}, e.label));
    svg.appendChild(path);
    if (e.label && !back) svg.appendChild(s('text', { x: mx, y: (y1 + y2) / 2 - 4, class: 'edge-label', 'text-anchor': 'middle' }, e.label));
  }
  for (const n of nodes) {
    const p = pos.get(n.id)!;
    const g = s('g', { class: `node ${n.cls ?? ''}`.trim(), transform: `translate(${p.x},${p.y})`, 'data-node': n.id });
    g.appendChild(s('rect', { width: W, height: H, rx: 6, ry: 6 }));
    g.appendChild(s('text', { x: 10, y: n.sub ? 20 : 30, class: 'node-label' }, clip(n.label, 26)));
    if (n.sub) g.appendChild(s('text', { x: 10, y: 38, class: 'node-sub' }, clip(n.sub, 30)));
    g.appendChild(s('title', {}, n.title ?? `${n.label}${n.sub ? ` — ${n.sub}` : ''}`));
    if (n.href) {
      const a = s('a', { href: n.href, class: 'node-link' });
      a.appendChild(g);
      svg.appendChild(a);
    } else svg.appendChild(g);
  }
  return h('div', { class: 'dag-wrap' }, svg);
}

function clip(t: string, n: number): string {
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}
