// Between the editor's graph (nodes and edges of the canvas) and workflow YAML, version 1.
// Node ids, titles, params, links, `enabled`, `ui` positions and collapsed nodes, and the
// workflow's groups (`ui.groups`), survive a round trip.

import YAML from 'yaml';

/** Parses workflow YAML into canvas nodes and edges; throws with the YAML error's message. */
export function fromYaml(text, descriptors) {
  const doc = YAML.parse(text) || {};
  const byType = new Map(descriptors.map((d) => [d.type_name, d]));
  const nodes = [];
  const edges = [];
  Object.entries(doc.nodes || {}).forEach(([id, spec]) => {
    const descriptor = byType.get(spec.type);
    nodes.push({
      id,
      type: 'socket',
      // Without a position the node waits for the layout (see layout.js) at the origin.
      position: spec.ui ? { x: spec.ui.x, y: spec.ui.y } : { x: 0, y: 0 },
      data: {
        collapsed: !!spec.ui?.collapsed,
        nodeType: spec.type,
        descriptor,
        title: spec.title,
        enabled: spec.enabled !== false,
        params: { ...(spec.params || {}) },
        placed: !!spec.ui,
      },
    });
    Object.entries(spec.inputs || {}).forEach(([input, link]) => {
      const dot = String(link).lastIndexOf('.');
      const source = String(link).slice(0, dot);
      const output = String(link).slice(dot + 1);
      edges.push(edge(source, output, id, input));
    });
  });
  // Groups come first, so they are drawn beneath the nodes.
  nodes.unshift(...(doc.ui?.groups || []).map((g, i) => groupNode(`${GROUP_PREFIX}${i + 1}`, g)));
  return { name: doc.name, description: doc.description, nodes, edges };
}

/** Group ids start with a character node ids cannot hold, so the two never clash. */
export const GROUP_PREFIX = '#group';

/** Whether a canvas node is a group (a titled box behind nodes) rather than a workflow node. */
export const isGroup = (node) => node.type === 'frame';

/** The canvas node of group `g` (`title`, `x`, `y`, `width`, `height`, `color`). */
export function groupNode(id, g) {
  return {
    id,
    type: 'frame',
    position: { x: g.x, y: g.y },
    width: g.width,
    height: g.height,
    data: { title: g.title ?? 'Group', color: g.color },
  };
}

/** The edge linking `source.output` to `target`'s input `input`. */
export function edge(source, output, target, input) {
  return { id: `${source}.${output}->${target}.${input}`, source, sourceHandle: output, target, targetHandle: input };
}

/** Writes canvas nodes and edges as workflow YAML. */
export function toYaml({ name, description, nodes, edges }) {
  const doc = { version: 1 };
  if (name) doc.name = name;
  if (description) doc.description = description;
  doc.nodes = {};
  const groups = nodes.filter(isGroup).map((g) => {
    const box = { title: g.data.title, x: Math.round(g.position.x), y: Math.round(g.position.y) };
    box.width = Math.round(g.width ?? g.measured?.width ?? 300);
    box.height = Math.round(g.height ?? g.measured?.height ?? 200);
    if (g.data.color) box.color = g.data.color;
    return box;
  });
  if (groups.length) doc.ui = { groups };
  for (const node of nodes.filter((n) => !isGroup(n))) {
    const spec = { type: node.data.nodeType };
    if (node.data.title) spec.title = node.data.title;
    const inputs = {};
    for (const e of edges.filter((e) => e.target === node.id)) inputs[e.targetHandle] = `${e.source}.${e.sourceHandle}`;
    if (Object.keys(inputs).length) spec.inputs = inputs;
    const params = Object.fromEntries(Object.entries(node.data.params).filter(([, v]) => v !== undefined && v !== null));
    if (Object.keys(params).length) spec.params = params;
    spec.ui = { x: Math.round(node.position.x), y: Math.round(node.position.y) };
    if (node.data.collapsed) spec.ui.collapsed = true;
    if (node.data.enabled === false) spec.enabled = false;
    doc.nodes[node.id] = spec;
  }
  return YAML.stringify(doc);
}

/** Default param values of a node type, as its descriptor gives them. */
export function defaultParams(descriptor) {
  const params = {};
  for (const p of descriptor.params) if (p.default !== undefined && p.default !== null) params[p.name] = p.default;
  return params;
}

/** A fresh node id for `typeName`, not among `taken`: the type in lower case, numbered. */
export function freshId(typeName, taken) {
  const base = typeName.replace(/[^A-Za-z0-9_-]/g, '').toLowerCase() || 'node';
  if (!taken.has(base)) return base;
  for (let i = 2; ; i += 1) if (!taken.has(`${base}_${i}`)) return `${base}_${i}`;
}

/** The socket type of `node`'s output or input `handle`. */
export function socketOf(node, handle, side) {
  const list = side === 'source' ? node?.data.descriptor?.outputs : node?.data.descriptor?.inputs;
  return list?.find((s) => s.name === handle)?.socket;
}

/** The colour of a node category's headers: one of a few soft hues, the same for a category
 * every time. */
export function categoryColour(category) {
  const hues = [210, 150, 30, 280, 0, 180, 60, 330];
  let hash = 0;
  for (const c of category || '') hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${hues[hash % hues.length]}, 45%, 82%)`;
}
