// One workflow node on the canvas: a header, typed input and output sockets, and a widget per
// param that honours its type, range and choices.

import React, { useContext } from 'react';
import { Handle, Position } from '@xyflow/react';
import { EditorContext } from './context.js';
import { categoryColour } from './workflow.js';

function ParamWidget({ nodeId, spec, value, onChange }) {
  const id = `${nodeId}-${spec.name}`;
  // An optional param left empty is left out of the workflow: it is off.
  const placeholder = spec.optional ? 'off' : undefined;
  const common = { id, 'data-param': spec.name, title: spec.description, className: 'nodrag', placeholder };
  const text = (e) => onChange(spec.optional && e.target.value === '' ? undefined : e.target.value);
  switch (spec.type) {
    case 'int':
    case 'float':
      return (
        <input
          {...common}
          type="number"
          min={spec.min}
          max={spec.max}
          step={spec.type === 'int' ? 1 : 'any'}
          value={value ?? ''}
          onChange={(e) => {
            const text = e.target.value;
            if (text === '') return onChange(undefined);
            const number = spec.type === 'int' ? parseInt(text, 10) : parseFloat(text);
            onChange(Number.isNaN(number) ? undefined : number);
          }}
        />
      );
    case 'boolean':
      return (
        <span className="toggle">
          <input {...common} type="checkbox" checked={!!value} onChange={(e) => onChange(e.target.checked)} />
          <span aria-hidden="true">{value ? 'on' : 'off'}</span>
        </span>
      );
    case 'choice':
      return (
        <select {...common} value={value ?? ''} onChange={(e) => onChange(e.target.value)}>
          {value === undefined && <option value="">choose…</option>}
          {spec.choices.map((c) => (
            <option key={c} value={c}>
              {c}
            </option>
          ))}
        </select>
      );
    default:
      return spec.multiline ? (
        <textarea {...common} rows={3} value={value ?? ''} onChange={text} />
      ) : (
        <input {...common} type="text" value={value ?? ''} onChange={text} />
      );
  }
}

/** A collapsed node: its header alone, every socket at its edges so links stay drawn. */
function CollapsedNode({ id, data, descriptor, colour, toggle }) {
  return (
    <div className={`node node-collapsed node-${data.status || 'idle'}`} data-node={id} data-type={data.nodeType} data-collapsed>
      <div className="node-header" title={descriptor.description} style={{ background: categoryColour(descriptor.category) }}>
        {toggle}
        <span className="node-id">{id}</span> <span className="node-type">{data.title || data.nodeType}</span>
        {data.progress && <span className="node-status">{`${data.progress.step}/${data.progress.total}`}</span>}
      </div>
      {descriptor.inputs.map((input) => (
        <Handle key={input.name} type="target" position={Position.Left} id={input.name} className="socket" style={colour(input.socket)} />
      ))}
      {descriptor.outputs.map((output) => (
        <Handle key={output.name} type="source" position={Position.Right} id={output.name} className="socket" style={colour(output.socket)} />
      ))}
    </div>
  );
}

/** The custom node type `socket`. */
export function SocketNode({ id, data }) {
  const { setParam, sockets, setCollapsed } = useContext(EditorContext);
  const colour = (socket) => ({ background: sockets?.[socket]?.colour });
  const descriptor = data.descriptor;
  const problems = data.problems || [];
  const fieldProblem = (field) => problems.find((p) => p.field === field)?.message;
  const nodeProblems = problems.filter((p) => !p.field);
  if (!descriptor) {
    return (
      <div className="node node-unknown" data-node={id}>
        <div className="node-header">{id}: unknown type {data.nodeType}</div>
      </div>
    );
  }
  const toggle = (
    <button
      className="collapse nodrag"
      data-collapse={id}
      title={data.collapsed ? 'expand' : 'collapse'}
      onClick={() => setCollapsed(id, !data.collapsed)}
    >
      {data.collapsed ? '▸' : '▾'}
    </button>
  );
  if (data.collapsed) return <CollapsedNode id={id} data={data} descriptor={descriptor} colour={colour} toggle={toggle} />;
  const classes = ['node', `node-${data.status || 'idle'}`];
  if (problems.length) classes.push('node-invalid');
  return (
    <div className={classes.join(' ')} data-node={id} data-type={data.nodeType}>
      <div className="node-header" title={descriptor.description} style={{ background: categoryColour(descriptor.category) }}>
        {toggle}
        <span className="node-id">{id}</span> <span className="node-type">{data.title || data.nodeType}</span>
        {data.status && <span className="node-status">{data.status}</span>}
      </div>
      {data.progress && (
        <div className="node-progress" data-progress={`${data.progress.step}/${data.progress.total}`}>
          <div style={{ width: `${(100 * data.progress.step) / data.progress.total}%` }} />
        </div>
      )}
      {data.preview && <img className="node-preview" src={data.preview} alt="the step's preview" data-preview />}
      {nodeProblems.map((p, i) => (
        <div key={i} className="problem">
          {p.message}
        </div>
      ))}
      <div className="node-body">
        <div className="node-inputs">
          {descriptor.inputs.map((input) => (
            <div key={input.name} className="socket-row" title={input.description}>
              <Handle
                type="target"
                position={Position.Left}
                id={input.name}
                className={`socket socket-${input.socket}`}
                style={colour(input.socket)}
                data-socket={input.socket}
              />
              <span className={input.optional ? 'optional' : ''}>
                {input.name} <small>{input.socket}</small>
              </span>
              {fieldProblem(input.name) && <div className="problem">{fieldProblem(input.name)}</div>}
            </div>
          ))}
        </div>
        <div className="node-outputs">
          {descriptor.outputs.map((output) => (
            <div key={output.name} className="socket-row out" title={output.description}>
              <span>
                <small>{output.socket}</small> {output.name}
              </span>
              <Handle
                type="source"
                position={Position.Right}
                id={output.name}
                className={`socket socket-${output.socket}`}
                style={colour(output.socket)}
                data-socket={output.socket}
              />
            </div>
          ))}
        </div>
      </div>
      {descriptor.params.length > 0 && (
        <div className="node-params">
          {descriptor.params.map((spec) => (
            <label key={spec.name} className={fieldProblem(spec.name) ? 'param invalid' : 'param'}>
              <span>{spec.name}</span>
              <ParamWidget
                nodeId={id}
                spec={spec}
                value={data.params[spec.name]}
                onChange={(value) => setParam(id, spec.name, value)}
              />
              {fieldProblem(spec.name) && <div className="problem">{fieldProblem(spec.name)}</div>}
            </label>
          ))}
        </div>
      )}
    </div>
  );
}
