// Where nodes go when a workflow has no positions, or positions that make nodes overlap: a
// layered layout (dagre) from left to right along the links, using each node's measured size.

import dagre from '@dagrejs/dagre';

/** The nodes' boxes as React Flow measured them (a default size before it has). */
function box(node) {
  return {
    x: node.position.x,
    y: node.position.y,
    width: node.measured?.width ?? 320,
    height: node.measured?.height ?? 200,
  };
}

/** Whether any two nodes' boxes overlap. */
export function overlapping(nodes) {
  const boxes = nodes.map(box);
  return boxes.some((a, i) =>
    boxes.slice(i + 1).some((b) => a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height),
  );
}

/** `nodes` moved to a layered layout of the graph `edges` make, none overlapping. */
export function layered(nodes, edges) {
  const graph = new dagre.graphlib.Graph();
  graph.setGraph({ rankdir: 'LR', nodesep: 40, ranksep: 80, marginx: 20, marginy: 20 });
  graph.setDefaultEdgeLabel(() => ({}));
  for (const node of nodes) {
    const { width, height } = box(node);
    graph.setNode(node.id, { width, height });
  }
  for (const edge of edges) if (graph.hasNode(edge.source) && graph.hasNode(edge.target)) graph.setEdge(edge.source, edge.target);
  dagre.layout(graph);
  return nodes.map((node) => {
    const { x, y, width, height } = graph.node(node.id);
    // dagre places centres; React Flow positions top-left corners.
    return { ...node, position: { x: x - width / 2, y: y - height / 2 } };
  });
}
