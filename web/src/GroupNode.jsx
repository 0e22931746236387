// A group: a titled box drawn behind workflow nodes, as ComfyUI's groups. Moving it moves the
// nodes inside it; its corners resize it; its title is edited in place. Saved in the
// workflow's `ui.groups`.

import React, { useContext, useState } from 'react';
import { NodeResizer } from '@xyflow/react';
import { EditorContext } from './context.js';

/** The custom node type `group`. Its header moves it; a double click on the title edits it. */
export function GroupNode({ id, data, selected }) {
  const { setGroupTitle } = useContext(EditorContext);
  const [editing, setEditing] = useState(false);
  return (
    <div className="group" data-group={data.title} style={data.color ? { background: data.color } : undefined}>
      <NodeResizer isVisible={selected} minWidth={120} minHeight={80} />
      <div className="group-header" data-group-header={id} onDoubleClick={() => setEditing(true)}>
        {editing ? (
          <input
            className="group-title nodrag"
            data-group-title={id}
            autoFocus
            value={data.title}
            aria-label="group title"
            onChange={(e) => setGroupTitle(id, e.target.value)}
            onBlur={() => setEditing(false)}
            onKeyDown={(e) => e.key === 'Enter' && setEditing(false)}
          />
        ) : (
          data.title
        )}
      </div>
    </div>
  );
}

/** The workflow nodes lying wholly inside `group`, as drawn. */
export function nodesInside(group, nodes) {
  const width = group.width ?? group.measured?.width ?? 0;
  const height = group.height ?? group.measured?.height ?? 0;
  return nodes.filter((node) => {
    if (node.type === 'frame') return false;
    const w = node.measured?.width ?? 0;
    const h = node.measured?.height ?? 0;
    const { x, y } = node.position;
    return x >= group.position.x && y >= group.position.y && x + w <= group.position.x + width && y + h <= group.position.y + height;
  });
}

/** A group box around `nodes`, with room for its title. */
export function boxAround(nodes) {
  const pad = 24;
  const left = Math.min(...nodes.map((n) => n.position.x));
  const top = Math.min(...nodes.map((n) => n.position.y));
  const right = Math.max(...nodes.map((n) => n.position.x + (n.measured?.width ?? 320)));
  const bottom = Math.max(...nodes.map((n) => n.position.y + (n.measured?.height ?? 200)));
  return { x: left - pad, y: top - pad - 32, width: right - left + 2 * pad, height: bottom - top + 2 * pad + 32 };
}
