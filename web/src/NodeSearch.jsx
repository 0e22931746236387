// The search box a double click on the empty canvas opens (or a link dropped there, listing the
// node types that can take it): type to filter the node types by name (then by description),
// Enter or a click adds the first or the chosen one where the canvas was clicked, Escape closes
// it.

import React, { useMemo, useState } from 'react';

/** Node types whose name, then whose description, contains every word of `query`. */
function matches(descriptors, query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  const has = (text) => words.every((w) => text.toLowerCase().includes(w));
  const byName = descriptors.filter((d) => has(d.type_name));
  const byDescription = descriptors.filter((d) => !byName.includes(d) && has(d.description || ''));
  return [...byName, ...byDescription];
}

/** `descriptors` filtered by `fits` (all when none), then by `query`. */
export function NodeSearch({ descriptors, fits, style, onPick, onClose }) {
  const [query, setQuery] = useState('');
  const found = useMemo(
    () => matches(fits ? descriptors.filter(fits) : descriptors, query).slice(0, 12),
    [descriptors, fits, query],
  );
  return (
    <div className="node-search" style={style} data-panel="node-search" onDoubleClick={(e) => e.stopPropagation()}>
      <input
        autoFocus
        data-field="node-search"
        placeholder="Add a node…"
        value={query}
        onChange={(e) => setQuery(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === 'Enter' && found.length) onPick(found[0]);
          if (e.key === 'Escape') onClose();
        }}
        onBlur={() => setTimeout(onClose, 150)}
      />
      <ul>
        {found.map((d) => (
          <li key={d.type_name}>
            <button data-pick={d.type_name} title={d.description} onMouseDown={(e) => e.preventDefault()} onClick={() => onPick(d)}>
              {d.type_name} <small>{d.category}</small>
            </button>
          </li>
        ))}
      </ul>
    </div>
  );
}
