// The server's REST API and its event stream.

async function request(method, path, body, contentType = 'application/json') {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { 'content-type': contentType },
    body,
  });
  const text = await response.text();
  let payload;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = { error: text };
  }
  if (!response.ok) {
    const error = new Error(payload?.error || `${method} ${path}: HTTP ${response.status}`);
    error.payload = payload;
    throw error;
  }
  return payload;
}

export const api = {
  nodes: () => request('GET', '/api/nodes'),
  sockets: () => request('GET', '/api/sockets'),
  validate: (yaml) => request('POST', '/api/validate', yaml, 'application/yaml'),
  submit: (yaml) => request('POST', '/api/jobs', yaml, 'application/yaml'),
  cancel: (id) => request('DELETE', `/api/jobs/${id}`),
  system: () => request('GET', '/api/system'),
  workflows: () => request('GET', '/api/workflows'),
  async loadWorkflow(name) {
    const response = await fetch(`/api/workflows/${encodeURIComponent(name)}`);
    if (!response.ok) throw new Error((await response.json()).error);
    return response.text();
  },
  saveWorkflow: (name, yaml) => request('PUT', `/api/workflows/${encodeURIComponent(name)}`, yaml, 'application/yaml'),
  /** A dropped file (ComfyUI JSON, a PNG with a workflow, or YAML) as workflow YAML. */
  async importWorkflow(name, bytes) {
    const response = await fetch(`/api/import?name=${encodeURIComponent(name)}`, { method: 'POST', body: bytes });
    if (!response.ok) throw new Error((await response.json()).error);
    return response.text();
  },
};

/** Opens /api/events and calls `onEvent` with each parsed message; reconnects when dropped. */
export function subscribe(onEvent) {
  let socket;
  let closed = false;
  const open = () => {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    socket = new WebSocket(`${scheme}://${location.host}/api/events`);
    socket.onmessage = (message) => onEvent(JSON.parse(message.data));
    socket.onclose = () => {
      if (!closed) setTimeout(open, 1000);
    };
  };
  open();
  return () => {
    closed = true;
    socket.close();
  };
}
