// Undo and redo for the editor's graph: snapshots of the nodes and edges taken before each
// change, the latest 100 kept. Changes that come in a burst (a node removed with its links, the
// keystrokes of one param) make one step.

import { useCallback, useRef } from 'react';

const LIMIT = 100;

/** `record(key)` before a change (calls with the same key in a row make one step), `undo()`,
 * `redo()`, and `reset()` for a graph opened afresh; `current()` gives the graph as it is now
 * and `restore(graph)` puts one back. */
export function useHistory(current, restore) {
  const past = useRef([]);
  const future = useRef([]);
  const last = useRef({ key: undefined, at: 0 });

  const record = useCallback(
    (key) => {
      const now = performance.now();
      const sameBurst = now - last.current.at < 50 || (key !== undefined && key === last.current.key);
      last.current = { key, at: now };
      if (sameBurst) return;
      past.current.push(current());
      if (past.current.length > LIMIT) past.current.shift();
      future.current = [];
    },
    [current],
  );

  const step = useCallback(
    (from, to) => {
      const graph = from.current.pop();
      if (!graph) return;
      to.current.push(current());
      last.current = { key: undefined, at: 0 };
      restore(graph);
    },
    [current, restore],
  );

  const reset = useCallback(() => {
    past.current = [];
    future.current = [];
    last.current = { key: undefined, at: 0 };
  }, []);

  return {
    record,
    reset,
    undo: useCallback(() => step(past, future), [step]),
    redo: useCallback(() => step(future, past), [step]),
  };
}
