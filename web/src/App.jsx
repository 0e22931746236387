// The editor: palette, canvas, toolbar and the run panel (images, memory, messages).

import React, { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import {
  ReactFlow,
  Background,
  Controls,
  MiniMap,
  addEdge,
  useEdgesState,
  useNodesState,
  useReactFlow,
} from '@xyflow/react';
import { api, subscribe } from './api.js';
import { EditorContext } from './context.js';
import { NodeSearch } from './NodeSearch.jsx';
import { BlockSwapCharts } from './BlockSwapCharts.jsx';
import { GroupNode, boxAround, nodesInside } from './GroupNode.jsx';
import { SocketNode } from './SocketNode.jsx';
import { useHistory } from './history.js';
import { layered, overlapping } from './layout.js';
import {
  GROUP_PREFIX,
  categoryColour,
  defaultParams,
  edge,
  freshId,
  fromYaml,
  groupNode,
  isGroup,
  socketOf,
  toYaml,
} from './workflow.js';

// Groups are 'frame' nodes: React Flow's own 'group' type is a parent of sub-flows.
const nodeTypes = { socket: SocketNode, frame: GroupNode };

/**
 * The workflow nodes laid out along `edges` (see layout.js); each group is redrawn around the
 * nodes it held before.
 */
function arranged(all, edges) {
  const groups = all.filter(isGroup);
  const members = new Map(groups.map((g) => [g.id, new Set(nodesInside(g, all).map((n) => n.id))]));
  const placed = layered(all.filter((n) => !isGroup(n)), edges);
  const regrouped = groups.map((g) => {
    const inside = placed.filter((n) => members.get(g.id).has(n.id));
    if (!inside.length) return g;
    const { x, y, width, height } = boxAround(inside);
    return { ...g, position: { x, y }, width, height };
  });
  return [...regrouped, ...placed];
}

function Palette({ descriptors, onAdd }) {
  const categories = useMemo(() => {
    const groups = new Map();
    for (const d of descriptors) {
      if (!groups.has(d.category)) groups.set(d.category, []);
      groups.get(d.category).push(d);
    }
    return [...groups.entries()].sort(([a], [b]) => a.localeCompare(b));
  }, [descriptors]);
  return (
    <aside className="palette">
      <h2>Nodes</h2>
      {categories.map(([category, list]) => (
        <details key={category} open>
          <summary>{category}</summary>
          {list.map((d) => (
            <button key={d.type_name} data-add={d.type_name} title={d.description} onClick={() => onAdd(d)}>
              {d.type_name}
            </button>
          ))}
        </details>
      ))}
    </aside>
  );
}

/**
 * What runs the jobs, from /api/system: each of the server's devices with its memory, the job
 * running there and the models it holds, or the shared queue's workers. Refreshed with every
 * queue change.
 */
function DevicesPanel({ queue }) {
  const [system, setSystem] = useState(null);
  useEffect(() => {
    api.system().then(setSystem).catch(() => setSystem(null));
  }, [queue]);
  if (!system) return null;
  const gib = (bytes) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  const rows = system.devices || system.workers || [];
  return (
    <section data-panel="devices">
      <h3>{system.workers ? 'Workers' : 'Devices'}</h3>
      <ul className="devices">
        {rows.map((d) => (
          <li key={d.runner} data-runner={d.runner}>
            <strong>{d.runner}</strong>
            {d.name ? ` (${d.name})` : ''}: {d.running ? `job ${d.running}` : 'idle'}
            {d.memory ? `, ${gib(d.memory.free)} free of ${gib(d.memory.total)}` : ''}
            {d.holds?.length ? <div className="holds">holds {d.holds.join(', ')}</div> : null}
          </li>
        ))}
      </ul>
    </section>
  );
}

/** Every image of the server's jobs, newest first; a click opens the workflow it carries. */
function Gallery({ queue, onOpen }) {
  const images = queue
    .filter((job) => job.images?.length)
    .reverse()
    .flatMap((job) => job.images.map((image) => ({ ...image, job: job.id })));
  if (!images.length) return null;
  return (
    <section data-panel="gallery">
      <h3>Gallery</h3>
      <div className="gallery">
        {images.map((image) => (
          <figure key={image.name} data-gallery-image={image.name}>
            <img
              src={`/api/images/${image.name}`}
              loading="lazy"
              alt={image.name}
              title="Open the workflow this image carries"
              onClick={() => onOpen(image.name)}
            />
            <figcaption>
              job {image.job}, {image.node}
            </figcaption>
          </figure>
        ))}
      </div>
    </section>
  );
}

function MemoryPanel({ reports }) {
  const gib = (bytes) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  if (!reports.length) return null;
  return (
    <section className="memory" data-panel="memory">
      <h3>Memory</h3>
      {reports.map(({ node, report }, i) => (
        <div key={i} className="memory-report">
          <strong>
            {report.title}
            {node ? ` (${node})` : ''}
          </strong>
          <table>
            <tbody>
              {report.device_allocated_bytes !== undefined && (
                <tr><td>device allocated</td><td>{gib(report.device_allocated_bytes)}</td></tr>
              )}
              {report.device_total_bytes !== undefined && (
                <tr><td>device total</td><td>{gib(report.device_total_bytes)}</td></tr>
              )}
              {report.host_resident_bytes !== undefined && (
                <tr><td>host resident</td><td>{gib(report.host_resident_bytes)}</td></tr>
              )}
              {(report.details || []).map(([label, value]) => (
                <tr key={label}><td>{label}</td><td>{value}</td></tr>
              ))}
            </tbody>
          </table>
        </div>
      ))}
    </section>
  );
}

export function App() {
  const [descriptors, setDescriptors] = useState([]);
  // Socket types by name: their colours and the other types each one takes.
  const [sockets, setSockets] = useState({});
  const [nodes, setNodes, applyNodeChanges] = useNodesState([]);
  const [edges, setEdges, applyEdgeChanges] = useEdgesState([]);
  // Undo and redo: the graph is recorded before each change a user makes.
  const graphRef = useRef({ nodes, edges });
  graphRef.current = { nodes, edges };
  const history = useHistory(
    useCallback(() => graphRef.current, []),
    useCallback(
      (graph) => {
        setNodes(graph.nodes);
        setEdges(graph.edges);
      },
      [setNodes, setEdges],
    ),
  );
  const onNodesChange = useCallback(
    (changes) => {
      if (changes.some((c) => c.type === 'remove')) history.record();
      applyNodeChanges(changes);
    },
    [applyNodeChanges, history],
  );
  const onEdgesChange = useCallback(
    (changes) => {
      if (changes.some((c) => c.type === 'remove')) history.record();
      applyEdgeChanges(changes);
    },
    [applyEdgeChanges, history],
  );
  // Copied nodes (with the links among them), for pasting and duplicating.
  const clipboard = useRef(null);
  const copySelection = useCallback(() => {
    const { nodes: all, edges: links } = graphRef.current;
    const chosen = all.filter((n) => n.selected && !isGroup(n));
    const ids = new Set(chosen.map((n) => n.id));
    if (!chosen.length) return false;
    clipboard.current = { nodes: chosen, edges: links.filter((e) => ids.has(e.source) && ids.has(e.target)) };
    return true;
  }, []);
  const paste = useCallback(() => {
    const copied = clipboard.current;
    if (!copied) return;
    history.record();
    const { nodes: all, edges: links } = graphRef.current;
    const taken = new Set(all.map((n) => n.id));
    const renamed = new Map();
    for (const node of copied.nodes) {
      const id = freshId(node.data.nodeType, taken);
      taken.add(id);
      renamed.set(node.id, id);
    }
    const pasted = copied.nodes.map((node) => ({
      ...node,
      id: renamed.get(node.id),
      position: { x: node.position.x + 40, y: node.position.y + 40 },
      selected: true,
      data: { ...node.data, status: undefined, progress: undefined, preview: undefined, problems: undefined },
    }));
    const pastedLinks = copied.edges.map((e) => edge(renamed.get(e.source), e.sourceHandle, renamed.get(e.target), e.targetHandle));
    setNodes([...all.map((n) => ({ ...n, selected: false })), ...pasted]);
    setEdges([...links, ...pastedLinks]);
    // A second paste lands beside this one.
    clipboard.current = { nodes: pasted, edges: pastedLinks };
  }, [history, setNodes, setEdges]);
  useEffect(() => {
    const onKey = (event) => {
      if (!(event.ctrlKey || event.metaKey) || event.target.closest?.('input, textarea, select')) return;
      const key = event.key.toLowerCase();
      if (key === 'z' && !event.shiftKey) history.undo();
      else if (key === 'y' || (key === 'z' && event.shiftKey)) history.redo();
      else if (key === 'c') copySelection();
      else if (key === 'v') paste();
      else if (key === 'd') copySelection() && paste();
      else return;
      event.preventDefault();
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [history, copySelection, paste]);
  const [meta, setMeta] = useState({ name: undefined, description: undefined });
  const [fileName, setFileName] = useState('untitled.yaml');
  const [saved, setSaved] = useState([]);
  const [message, setMessage] = useState('');
  const [job, setJob] = useState(null);
  const [images, setImages] = useState([]);
  const [memory, setMemory] = useState([]);
  // Every memory report of the run with the time it came, for the charts.
  const [memorySamples, setMemorySamples] = useState([]);
  // Every job of the server, as its queue events list them; and the last validation's problems.
  const [queue, setQueue] = useState([]);
  const [problems, setProblems] = useState([]);
  const jobRef = useRef(null);
  const descriptorsRef = useRef([]);

  // A graph just opened is arranged (when it lacks positions or its nodes overlap) and fitted
  // into view once React Flow has measured its nodes.
  const { fitView, screenToFlowPosition, setCenter } = useReactFlow();
  // Search-to-add: a double click on the empty canvas opens a search box there.
  const [search, setSearch] = useState(null);
  const canvasRef = useRef(null);
  /** Opens the search where `event` happened, for a link from `link` when given. */
  const searchAt = (event, link) => {
    const { clientX, clientY } = 'changedTouches' in event ? event.changedTouches[0] : event;
    const bounds = canvasRef.current.getBoundingClientRect();
    setSearch({
      at: screenToFlowPosition({ x: clientX, y: clientY }),
      left: clientX - bounds.left,
      top: clientY - bounds.top,
      link,
    });
  };
  const openSearch = (event) => {
    if (event.target.classList?.contains('react-flow__pane')) searchAt(event);
  };
  // A link dropped on the empty canvas: the search lists the node types that can take it.
  const onConnectEnd = (event, state) => {
    if (state.isValid || state.toNode || !state.fromNode || !state.fromHandle) return;
    const from = state.fromHandle.type === 'source' ? 'source' : 'target';
    const socket = socketOf(state.fromNode, state.fromHandle.id, from);
    if (socket) searchAt(event, { node: state.fromNode.id, handle: state.fromHandle.id, from, socket });
  };
  const accepts = useCallback((to, from) => from === to || !!sockets[to]?.accepts.includes(from), [sockets]);
  /** The socket of `descriptor` a link from `link` would join: an input taking an output's
   * type, or an output an input takes. */
  const joining = useCallback(
    (descriptor, link) =>
      link.from === 'source'
        ? descriptor.inputs.find((i) => accepts(i.socket, link.socket))
        : descriptor.outputs.find((o) => accepts(link.socket, o.socket)),
    [accepts],
  );
  const pick = (descriptor) => {
    const { at, link } = search;
    setSearch(null);
    if (!link) return addNode(descriptor, at);
    history.record();
    const id = freshId(descriptor.type_name, new Set(graphRef.current.nodes.map((n) => n.id)));
    const data = { nodeType: descriptor.type_name, descriptor, enabled: true, params: defaultParams(descriptor), placed: true };
    setNodes((all) => [...all, { id, type: 'socket', position: at, data }]);
    const socket = joining(descriptor, link).name;
    const joined = link.from === 'source' ? edge(link.node, link.handle, id, socket) : edge(id, socket, link.node, link.handle);
    // An input takes one link: a new one replaces the old.
    setEdges((all) => [...all.filter((e) => !(e.target === joined.target && e.targetHandle === joined.targetHandle)), joined]);
  };
  const [arranging, setArranging] = useState(false);
  const measured = nodes.length > 0 && nodes.every((n) => n.measured?.width);
  // The view is fitted in an effect after the render that moved the nodes: React Flow (a child)
  // has taken their new positions by then.
  const [fitting, setFitting] = useState(false);
  useEffect(() => {
    if (!fitting) return;
    setFitting(false);
    fitView({ padding: 0.08 });
  }, [fitting, nodes, fitView]);
  useEffect(() => {
    if (!arranging || !measured) return;
    setArranging(false);
    setNodes((all) => {
      const placed = all.filter((n) => !isGroup(n));
      return placed.some((n) => !n.data.placed) || overlapping(placed) ? arranged(all, edges) : all;
    });
    setFitting(true);
  }, [arranging, measured, edges, setNodes]);
  const arrange = () => {
    history.record();
    setNodes((all) => arranged(all, edges));
    setFitting(true);
  };

  // Groups: a box around the selected nodes; moving a group moves the nodes inside it.
  const groupSelection = () => {
    const chosen = graphRef.current.nodes.filter((n) => n.selected && !isGroup(n));
    if (!chosen.length) return setMessage('Select the nodes to group first (Ctrl-click them, or shift-drag a box around them).');
    history.record();
    const taken = new Set(graphRef.current.nodes.map((n) => n.id));
    let number = 1;
    while (taken.has(`${GROUP_PREFIX}${number}`)) number += 1;
    setNodes((all) => [groupNode(`${GROUP_PREFIX}${number}`, { title: 'Group', ...boxAround(chosen) }), ...all]);
  };
  const dragged = useRef(null);
  const onNodeDragStart = (_, node) => {
    history.record();
    dragged.current = isGroup(node)
      ? { from: node.position, members: nodesInside(node, graphRef.current.nodes).map((n) => [n.id, n.position]) }
      : null;
  };
  const onNodeDrag = (_, node) => {
    if (!isGroup(node) || !dragged.current) return;
    const dx = node.position.x - dragged.current.from.x;
    const dy = node.position.y - dragged.current.from.y;
    const starts = new Map(dragged.current.members);
    setNodes((all) =>
      all.map((n) => (starts.has(n.id) ? { ...n, position: { x: starts.get(n.id).x + dx, y: starts.get(n.id).y + dy } } : n)),
    );
  };
  const setGroupTitle = useCallback(
    (id, title) => {
      history.record(`group ${id}`);
      setNodes((all) => all.map((n) => (n.id === id ? { ...n, data: { ...n.data, title } } : n)));
    },
    [history, setNodes],
  );

  const refreshSaved = useCallback(() => api.workflows().then((list) => setSaved(list.workflows)), []);

  useEffect(() => {
    api.nodes().then((list) => {
      descriptorsRef.current = list;
      setDescriptors(list);
    });
    api.sockets().then((list) => setSockets(Object.fromEntries(list.map((s) => [s.name, s]))));
    refreshSaved().catch(() => {});
  }, [refreshSaved]);

  const patchNode = useCallback(
    (id, patch) => setNodes((all) => all.map((n) => (n.id === id ? { ...n, data: { ...n.data, ...patch(n.data) } } : n))),
    [setNodes],
  );

  // Run events by job, so those that arrive before the submission's reply are not lost.
  const runEvents = useRef(new Map());

  const applyRunEvent = useCallback(
    (message) => {
      switch (message.event) {
        case 'run_started':
          setJob((j) => ({ ...j, state: 'running' }));
          setNodes((all) => all.map((n) => ({ ...n, data: { ...n.data, status: undefined, progress: undefined, preview: undefined } })));
          break;
        case 'node_started':
          patchNode(message.node, () => ({ status: 'running' }));
          break;
        case 'node_cached':
          patchNode(message.node, () => ({ status: 'cached' }));
          break;
        case 'progress':
          patchNode(message.node, () => ({ progress: { step: message.step, total: message.total } }));
          break;
        case 'preview':
          if (message.preview) patchNode(message.node, () => ({ preview: message.preview }));
          break;
        case 'node_finished':
          patchNode(message.node, () => ({ status: 'done' }));
          break;
        case 'node_failed':
          patchNode(message.node, () => ({ status: 'failed', problems: [{ message: message.error }] }));
          break;
        case 'memory':
          setMemory((all) => [...all.filter((m) => m.node !== message.node || m.report.title !== message.report.title), message]);
          setMemorySamples((all) => [...all, { at: performance.now(), report: message.report }]);
          break;
        case 'output_written':
          if (message.image) setImages((all) => [...all, message.image]);
          break;
        case 'run_finished':
          setJob((j) => ({ ...j, state: message.cancelled ? 'cancelled' : message.failed ? 'failed' : 'succeeded' }));
          setMessage(
            message.cancelled ? 'Cancelled.' : message.failed ? 'The run failed.' : `Done in ${(message.elapsed_ms / 1000).toFixed(1)} s.`,
          );
          break;
        default:
      }
    },
    [patchNode, setNodes],
  );

  useEffect(
    () =>
      subscribe((message) => {
        if (message.kind === 'queue') setQueue(message.jobs);
        if (message.kind !== 'run') return;
        if (message.job === jobRef.current) {
          applyRunEvent(message);
          return;
        }
        const events = runEvents.current;
        if (!events.has(message.job)) events.set(message.job, []);
        events.get(message.job).push(message);
        // Keep the events of the latest few jobs only.
        while (events.size > 4) events.delete(events.keys().next().value);
      }),
    [applyRunEvent],
  );

  const setCollapsed = useCallback(
    (id, collapsed) => {
      history.record();
      patchNode(id, () => ({ collapsed }));
    },
    [patchNode, history],
  );

  const setParam = useCallback(
    (id, name, value) => {
      history.record(`param ${id}.${name}`);
      patchNode(id, (d) => ({ params: { ...d.params, [name]: value } }));
    },
    [patchNode, history],
  );

  const addNode = useCallback(
    (descriptor, at) => {
      history.record();
      setNodes((all) => {
        const id = freshId(descriptor.type_name, new Set(all.map((n) => n.id)));
        const position = at ?? { x: 40 + (all.length % 4) * 380, y: 40 + Math.floor(all.length / 4) * 440 };
        const data = { nodeType: descriptor.type_name, descriptor, enabled: true, params: defaultParams(descriptor), placed: true };
        return [...all, { id, type: 'socket', position, data }];
      });
    },
    [setNodes, history],
  );

  const nodeById = useCallback((id) => nodes.find((n) => n.id === id), [nodes]);

  const isValidConnection = useCallback(
    (c) => {
      const from = socketOf(nodeById(c.source), c.sourceHandle, 'source');
      const to = socketOf(nodeById(c.target), c.targetHandle, 'target');
      const accepted = accepts(to, from);
      return !!from && accepted && c.source !== c.target;
    },
    [nodeById, accepts],
  );

  const onConnect = useCallback(
    (c) => {
      history.record();
      setEdges((all) =>
        // An input takes one link: a new one replaces the old.
        addEdge(edge(c.source, c.sourceHandle, c.target, c.targetHandle), all.filter((e) => !(e.target === c.target && e.targetHandle === c.targetHandle))),
      );
    },
    [setEdges, history],
  );

  const yaml = () => toYaml({ ...meta, nodes, edges });
  // What was last opened or saved, to tell unsaved changes.
  const [savedText, setSavedText] = useState(() => toYaml({ nodes: [], edges: [] }));
  const unsaved = yaml() !== savedText;

  // Selects the node a problem names and brings it to the middle of the view.
  const showNode = (id) => {
    const node = nodes.find((n) => n.id === id);
    if (!node) return;
    setNodes((all) => all.map((n) => ({ ...n, selected: n.id === id })));
    const { width = 290, height = 200 } = node.measured || {};
    setCenter(node.position.x + width / 2, node.position.y + height / 2, { zoom: 1 });
  };

  const showProblems = (errors) => {
    setProblems(errors);
    setNodes((all) => all.map((n) => ({ ...n, data: { ...n.data, problems: errors.filter((e) => e.node === n.id) } })));
    const general = errors.filter((e) => !e.node);
    setMessage(`${errors.length} problem${errors.length === 1 ? '' : 's'}${general.length ? ': ' + general.map((e) => e.message).join('; ') : ' (shown on the nodes)'}`);
  };

  const validate = async () => {
    const result = await api.validate(yaml());
    if (result.valid) {
      showProblems([]);
      setMessage(`Valid: ${result.plan.steps.length} steps.`);
    } else showProblems(result.report.errors);
    return result.valid;
  };

  const run = async () => {
    try {
      if (!(await validate())) return;
      setImages([]);
      setMemory([]);
      setMemorySamples([]);
      const submitted = await api.submit(yaml());
      jobRef.current = submitted.id;
      setJob({ id: submitted.id, state: 'queued' });
      setMessage(`Job ${submitted.id} queued.`);
      for (const message of runEvents.current.get(submitted.id) || []) applyRunEvent(message);
      runEvents.current.delete(submitted.id);
    } catch (error) {
      setMessage(error.message);
    }
  };

  const cancel = async () => {
    if (job) await api.cancel(job.id).catch((e) => setMessage(e.message));
  };

  const save = async () => {
    try {
      const text = yaml();
      await api.saveWorkflow(fileName, text);
      setSavedText(text);
      setMessage(`Saved ${fileName}.`);
      refreshSaved();
    } catch (error) {
      setMessage(error.message);
    }
  };

  const load = async (name) => {
    try {
      openText(name, await api.loadWorkflow(name));
      setMessage(`Loaded ${name}.`);
    } catch (error) {
      setMessage(error.message);
    }
  };

  // A file dropped on the canvas: workflow YAML as it is; ComfyUI's JSON, or a PNG carrying a
  // workflow (swapgraph's or ComfyUI's), through the server's importer.
  const drop = async (event) => {
    const file = event.dataTransfer?.files?.[0];
    if (!file) return;
    event.preventDefault();
    try {
      const text = /\.ya?ml$/i.test(file.name) ? await file.text() : await api.importWorkflow(file.name, await file.arrayBuffer());
      openText(file.name.replace(/\.[^.]*$/, '') + '.yaml', text);
      setMessage(`Opened ${file.name}.`);
    } catch (error) {
      setMessage(error.message);
    }
  };

  // An image the run saved carries the workflow that made it: open that.
  const openImage = async (name) => {
    try {
      const bytes = await (await fetch(`/api/images/${name}`)).arrayBuffer();
      const base = name.split('/').pop();
      openText(base.replace(/\.[^.]*$/, '') + '.yaml', await api.importWorkflow(base, bytes));
      setMessage(`Opened the workflow of ${base}.`);
    } catch (error) {
      setMessage(error.message);
    }
  };

  /** Puts the workflow `text` on the canvas as the file `name`. */
  const openText = (name, text) => {
    const graph = fromYaml(text, descriptorsRef.current);
    setNodes(graph.nodes);
    setEdges(graph.edges);
    setArranging(true);
    history.reset();
    setSavedText(toYaml({ name: graph.name, description: graph.description, nodes: graph.nodes, edges: graph.edges }));
    setMeta({ name: graph.name, description: graph.description });
    setFileName(name);
    setImages([]);
    setMemory([]);
    setMemorySamples([]);
  };

  const clear = () => {
    history.reset();
    setNodes([]);
    setEdges([]);
    setMeta({});
    setSavedText(toYaml({ nodes: [], edges: [] }));
    setMessage('');
  };

  return (
    <EditorContext.Provider value={{ setParam, sockets, setCollapsed, setGroupTitle }}>
      <div className="editor">
        <header className="toolbar">
          <strong>swapgraph</strong>
          <button data-action="new" onClick={clear}>New</button>
          <select data-action="open" value="" onChange={(e) => e.target.value && load(e.target.value)}>
            <option value="">Open…</option>
            {saved.map((name) => (
              <option key={name} value={name}>{name}</option>
            ))}
          </select>
          <input data-field="filename" value={fileName} onChange={(e) => setFileName(e.target.value)} />
          <span data-unsaved={unsaved} title={unsaved ? 'Changed since opened or saved' : 'Saved'}>{unsaved ? '●' : ''}</span>
          <button data-action="save" onClick={save}>Save</button>
          <button data-action="undo" onClick={history.undo} title="Undo (Ctrl+Z)">Undo</button>
          <button data-action="redo" onClick={history.redo} title="Redo (Ctrl+Shift+Z)">Redo</button>
          <button data-action="arrange" onClick={arrange} title="Lay the graph out along its links and fit it into view">Arrange</button>
          <button data-action="group" onClick={groupSelection} title="Draw a group around the selected nodes">Group</button>
          <button data-action="validate" onClick={() => validate().catch((e) => setMessage(e.message))}>Validate</button>
          <button data-action="run" onClick={run}>Run</button>
          <button data-action="cancel" onClick={cancel} disabled={!job || !['queued', 'running'].includes(job.state)}>Cancel</button>
          <span className="message" data-message>{message}</span>
        </header>
        <Palette descriptors={descriptors} onAdd={addNode} />
        <main className="canvas" ref={canvasRef} onDoubleClick={openSearch} onDragOver={(e) => e.preventDefault()} onDrop={drop}>
          {search && (
            <NodeSearch
              descriptors={descriptors}
              fits={search.link && ((d) => !!joining(d, search.link))}
              style={{ left: search.left, top: search.top }}
              onPick={pick}
              onClose={() => setSearch(null)}
            />
          )}
          <ReactFlow
            nodes={nodes}
            edges={edges}
            nodeTypes={nodeTypes}
            onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange}
            onConnect={onConnect}
            onConnectEnd={onConnectEnd}
            onNodeDragStart={onNodeDragStart}
            onNodeDrag={onNodeDrag}
            isValidConnection={isValidConnection}
            deleteKeyCode={['Delete', 'Backspace']}
            minZoom={0.1}
            zoomOnDoubleClick={false}
          >
            <Background />
            <Controls />
            <MiniMap pannable zoomable nodeColor={(n) => (isGroup(n) ? '#44475a55' : categoryColour(n.data.descriptor?.category))} />
          </ReactFlow>
        </main>
        <aside className="results">
          <h2>Results</h2>
          {job && (
            <div data-job={job.id} data-state={job.state}>
              Job {job.id}: {job.state}
            </div>
          )}
          {images.map((name) => (
            <figure key={name}>
              <img src={`/api/images/${name}`} alt={name} data-image={name} />
              <figcaption>
                {name}{' '}
                <button data-open-image={name} title="Open the workflow this image carries" onClick={() => openImage(name)}>
                  Open its workflow
                </button>
              </figcaption>
            </figure>
          ))}
          {problems.length > 0 && (
            <section data-panel="problems">
              <h3>Problems</h3>
              <ul className="problems">
                {problems.map((p, i) => (
                  <li key={i}>
                    <button data-problem={p.node || ''} disabled={!p.node} onClick={() => showNode(p.node)}>
                      {p.node ? <strong>{p.node}{p.field ? `.${p.field}` : ''}: </strong> : null}
                      {p.message}
                    </button>
                  </li>
                ))}
              </ul>
            </section>
          )}
          {queue.length > 0 && (
            <section data-panel="queue">
              <h3>Queue</h3>
              <ul className="queue">
                {queue.map((j) => (
                  <li key={j.id} data-queued-job={j.id} data-state={j.state}>
                    Job {j.id}: {j.state}
                    {j.runner ? ` on ${j.runner}` : ''}
                    {['queued', 'running'].includes(j.state) && (
                      <button data-cancel={j.id} onClick={() => api.cancel(j.id).catch((e) => setMessage(e.message))}>
                        Cancel
                      </button>
                    )}
                  </li>
                ))}
              </ul>
            </section>
          )}
          <Gallery queue={queue} onOpen={openImage} />
          <DevicesPanel queue={queue} />
          <BlockSwapCharts samples={memorySamples} />
          <MemoryPanel reports={memory} />
        </aside>
      </div>
    </EditorContext.Provider>
  );
}
