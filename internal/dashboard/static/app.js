// Lotse's dashboard: every call goes through the dashboard's proxy to the
// management API with the signed-in user's token, so the API's RBAC and
// admission decide what the user may do, as they do for the CLI.
'use strict';

const API = '/k8s';
const LOTSE = '/apis/lotse.dev/v1alpha1';
const OPERATION = 'lotse.dev/operation';

const state = {
  token: sessionStorage.getItem('lotse-token') || '',
  namespace: sessionStorage.getItem('lotse-namespace') || 'default',
  clusters: new Map(),
  selected: null,
  watch: null, // AbortController of the running watch
  session: 0, // counts sign-ins and sign-outs: late answers of an old one are dropped
};

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

function showError(message) {
  $('error-text').textContent = message;
  $('error').hidden = false;
  $('notice').hidden = true;
}

function clearError() {
  $('error').hidden = true;
}

function notice(message) {
  $('notice').textContent = message;
  $('notice').hidden = false;
}

// api calls the management API and returns the decoded answer; an error
// carries the API's own message (a Status), which the page shows as is.
async function api(method, path, body, contentType, signal) {
  if (!state.token) {
    throw new Error('sign in with a management-API token first');
  }
  const headers = { Accept: 'application/json', Authorization: 'Bearer ' + state.token };
  const init = { method, headers, signal };
  if (body !== undefined) {
    headers['Content-Type'] = contentType || 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(API + path, init);
  } catch (e) {
    throw new Error('the dashboard cannot be reached: ' + e.message);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    data = null;
  }
  if (!resp.ok) {
    const message = data && data.message ? data.message : `${resp.status} ${resp.statusText}${text ? ': ' + text : ''}`;
    const err = new Error(message);
    err.status = resp.status;
    throw err;
  }
  return data;
}

const mergePatch = (path, body) => api('PATCH', path, body, 'application/merge-patch+json');
const clusterPath = (name) => `${LOTSE}/namespaces/${enc(state.namespace)}/clusters/${enc(name)}`;

// action wraps a handler: errors end up in the error banner.
function action(fn) {
  return async (ev) => {
    if (ev) ev.preventDefault();
    clearError();
    try {
      await fn(ev);
    } catch (e) {
      showError(e.message);
    }
  };
}

function condition(c, type) {
  return ((c.status && c.status.conditions) || []).find((x) => x.type === type);
}

function render() {
  const rows = $('cluster-rows');
  rows.replaceChildren();
  const names = [...state.clusters.keys()].sort();
  $('no-clusters').hidden = names.length > 0;
  for (const name of names) {
    const c = state.clusters.get(name);
    const st = c.status || {};
    const ready = condition(c, 'Ready');
    const tr = document.createElement('tr');
    tr.className = 'cluster' + (name === state.selected ? ' selected' : '');
    tr.id = 'cluster-' + name;
    tr.dataset.phase = st.phase || '';
    tr.dataset.ready = ready ? ready.status : 'Unknown';
    const progress = st.lastOperation ? `${st.lastOperation.type || ''} ${st.lastOperation.state || ''} ${st.lastOperation.progress != null ? st.lastOperation.progress + '%' : ''}: ${st.lastOperation.description || ''}` : '';
    const failing = (st.conditions || []).filter((x) => x.status !== 'True').map((x) => x.type);
    const cells = [
      name,
      (c.spec.kubernetes && c.spec.kubernetes.version) || '',
      c.spec.controlPlane && c.spec.controlPlane.highAvailability ? 'yes' : 'no',
      st.phase || 'Pending',
      progress,
      ready ? ready.status : 'Unknown',
      failing.length ? 'not yet: ' + failing.join(', ') : (st.conditions || []).length ? 'all true' : '',
    ];
    cells.forEach((text, i) => {
      const td = document.createElement('td');
      td.textContent = text;
      if (i === 5) {
        td.className = 'ready ' + (text === 'True' ? 'cond-true' : 'cond-false');
      }
      tr.appendChild(td);
    });
    tr.addEventListener('click', () => select(name));
    rows.appendChild(tr);
  }
  renderDetail();
}

function renderDetail() {
  const c = state.selected && state.clusters.get(state.selected);
  $('detail').hidden = !c;
  if (!c) return;
  $('detail-name').textContent = c.metadata.name;
  // One phase for all credentials while they move together; each named otherwise.
  const rot = (c.status && c.status.credentials && c.status.credentials.rotation) || {};
  const kinds = { certificateAuthorities: 'CA', serviceAccountKey: 'service-account key', etcdEncryptionKey: 'etcd encryption key' };
  const phases = Object.keys(kinds).filter((k) => rot[k]).map((k) => [kinds[k], rot[k].phase]);
  const same = phases.length === 3 && phases.every(([, ph]) => ph === phases[0][1]);
  const line = $('detail-rotation');
  line.dataset.phase = same ? phases[0][1] : '';
  line.textContent = phases.length === 0 ? 'none yet' : same ? phases[0][1] : phases.map(([k, ph]) => `${k} ${ph}`).join(', ');
  const body = $('detail-conditions');
  body.replaceChildren();
  for (const x of (c.status && c.status.conditions) || []) {
    const tr = document.createElement('tr');
    for (const text of [x.type, x.status, x.reason, x.message]) {
      const td = document.createElement('td');
      td.textContent = text || '';
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

function select(name) {
  if (state.selected !== name) {
    $('kubeconfig').hidden = true;
    $('delete-confirm').hidden = true;
  }
  state.selected = name;
  const c = state.clusters.get(name);
  $('detail-version').value = (c && c.spec.kubernetes && c.spec.kubernetes.version) || '';
  render();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// list reads a namespace's clusters into the table, unless the page moved
// on (ctrl aborted) meanwhile, and returns the list's resourceVersion.
async function list(ns, ctrl) {
  const l = await api('GET', `${LOTSE}/namespaces/${enc(ns)}/clusters`, undefined, undefined, ctrl.signal);
  if (ctrl.signal.aborted) throw new DOMException('moved on', 'AbortError');
  state.clusters = new Map(l.items.map((c) => [c.metadata.name, c]));
  render();
  return l.metadata.resourceVersion;
}

// watchClusters keeps the table live: a watch of the namespace's clusters,
// listed again whenever the watch breaks (backing off while that fails).
// It ends when ctrl is aborted: the page opened another namespace.
async function watchClusters(ns, rv, ctrl) {
  let backoff = 1000;
  while (!ctrl.signal.aborted) {
    try {
      const url = `${API}${LOTSE}/namespaces/${enc(ns)}/clusters?watch=1&allowWatchBookmarks=true&resourceVersion=${enc(rv)}`;
      const resp = await fetch(url, { headers: { Authorization: 'Bearer ' + state.token }, signal: ctrl.signal });
      if (!resp.ok) {
        const d = await resp.json().catch(() => null);
        throw new Error((d && d.message) || resp.statusText);
      }
      $('live').textContent = '(live)';
      backoff = 1000;
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (!line.trim()) continue;
          const ev = JSON.parse(line);
          if (ev.type === 'ERROR') throw new Error(ev.object.message);
          if (ctrl.signal.aborted) return;
          rv = ev.object.metadata.resourceVersion;
          if (ev.type === 'BOOKMARK') continue;
          if (ev.type === 'DELETED') {
            state.clusters.delete(ev.object.metadata.name);
          } else {
            state.clusters.set(ev.object.metadata.name, ev.object);
          }
          render();
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    if (ctrl.signal.aborted) return;
    $('live').textContent = '(reconnecting)';
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 30000);
    if (ctrl.signal.aborted) return;
    try {
      rv = await list(ns, ctrl);
    } catch (e) {
      if (ctrl.signal.aborted) return;
      showError(e.message);
      if (e.status === 401 || e.status === 403) {
        $('live').textContent = '';
        return;
      }
    }
  }
}

async function openNamespace(ns) {
  // The previous namespace's list and watch end before anything else:
  // nothing of theirs may land in this namespace's table.
  if (state.watch) state.watch.abort();
  const ctrl = new AbortController();
  state.watch = ctrl;
  state.namespace = ns;
  sessionStorage.setItem('lotse-namespace', ns);
  $('namespace').value = ns;
  state.selected = null;
  state.clusters = new Map();
  $('live').textContent = '';
  render();
  summarizeProject(ns, ctrl);
  let rv;
  try {
    rv = await list(ns, ctrl);
  } catch (e) {
    if (ctrl.signal.aborted) return;
    throw e;
  }
  watchClusters(ns, rv, ctrl);
}

async function summarizeProject(ns, ctrl) {
  $('project-summary').textContent = '';
  if (!ns.startsWith('project-')) return;
  const name = ns.slice('project-'.length);
  try {
    const p = await api('GET', `${LOTSE}/projects/${enc(name)}`, undefined, undefined, ctrl.signal);
    if (ctrl.signal.aborted) return;
    const q = (p.spec && p.spec.quota) || {};
    const u = (p.status && p.status.usage) || {};
    const part = (label, used, limit) => `${label} ${used || 0}${limit != null ? '/' + limit : ''}`;
    $('project-summary').textContent = `project ${name}: ` + [
      part('clusters', u.clusters, q.clusters),
      part('nodes', u.nodes, q.nodes),
      part('control-plane replicas', u.controlPlaneReplicas, q.controlPlaneReplicas),
    ].join(', ');
  } catch (e) {
    // Not everyone may read the project; the clusters still show.
  }
}

async function loadProjects() {
  const options = $('projects');
  options.replaceChildren();
  try {
    const l = await api('GET', `${LOTSE}/projects`);
    for (const p of l.items) {
      const o = document.createElement('option');
      o.value = 'project-' + p.metadata.name;
      o.label = 'project ' + p.metadata.name;
      options.appendChild(o);
    }
  } catch (e) {
    // Members may not list projects: they type their project's namespace.
  }
}

function signedIn(user) {
  $('whoami').textContent = 'signed in as ' + user;
  $('signin').hidden = true;
  $('app').hidden = false;
  $('signout').hidden = false;
}

function signOut() {
  state.session++;
  if (state.watch) state.watch.abort();
  state.watch = null;
  $('project-summary').textContent = '';
  $('projects').replaceChildren();
  $('error').hidden = true;
  $('notice').hidden = true;
  sessionStorage.removeItem('lotse-namespace');
  state.token = '';
  sessionStorage.removeItem('lotse-token');
  // Forget what the signed-in user could see.
  $('token').value = '';
  $('kubeconfig-text').value = '';
  const link = $('kubeconfig-download');
  if (link.href.startsWith('blob:')) URL.revokeObjectURL(link.href);
  link.removeAttribute('href');
  $('kubeconfig').hidden = true;
  state.clusters = new Map();
  state.selected = null;
  render();
  $('whoami').textContent = 'not signed in';
  $('signin').hidden = false;
  $('app').hidden = true;
  $('signout').hidden = true;
}

async function signIn(token) {
  state.session++;
  state.token = token.trim();
  try {
    const review = await api('POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', {
      apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview',
    });
    sessionStorage.setItem('lotse-token', state.token);
    signedIn(review.status.userInfo.username);
  } catch (e) {
    state.token = '';
    sessionStorage.removeItem('lotse-token');
    throw e;
  }
  await loadProjects();
  await openNamespace(state.namespace);
}

function wire() {
  $('error-close').addEventListener('click', clearError);
  $('signout').addEventListener('click', signOut);
  $('signin-form').addEventListener('submit', action(() => signIn($('token').value)));
  $('open').addEventListener('click', action(() => openNamespace($('namespace').value.trim() || 'default')));

  $('create-form').addEventListener('submit', action(async () => {
    const name = $('create-name').value.trim();
    const spec = { controlPlane: { highAvailability: $('create-ha').checked } };
    const version = $('create-version').value.trim();
    if (version) spec.kubernetes = { version };
    const nodes = parseInt($('create-nodes').value, 10) || 0;
    if (nodes > 0) spec.workers = [{ name: 'default', minimum: nodes, maximum: nodes }];
    await api('POST', `${LOTSE}/namespaces/${enc(state.namespace)}/clusters`, {
      apiVersion: 'lotse.dev/v1alpha1', kind: 'Cluster', metadata: { name, namespace: state.namespace }, spec,
    });
    notice(`cluster ${name} created`);
    select(name);
  }));

  $('version-form').addEventListener('submit', action(async () => {
    const version = $('detail-version').value.trim();
    await mergePatch(clusterPath(state.selected), { spec: { kubernetes: { version } } });
    notice(`cluster ${state.selected} moves to version ${version}`);
  }));

  $('scale-form').addEventListener('submit', action(async () => {
    const c = await api('GET', clusterPath(state.selected));
    const pool = $('scale-pool').value.trim();
    const minimum = parseInt($('scale-min').value, 10);
    const maximum = parseInt($('scale-max').value, 10);
    const workers = (c.spec.workers || []).map((w) => (w.name === pool ? { ...w, minimum, maximum } : w));
    if (!workers.some((w) => w.name === pool)) workers.push({ name: pool, minimum, maximum });
    // The resourceVersion makes this fail rather than undo a change made meanwhile.
    await mergePatch(clusterPath(state.selected), { metadata: { resourceVersion: c.metadata.resourceVersion }, spec: { workers } });
    notice(`pool ${pool} of cluster ${state.selected}: ${minimum} to ${maximum} machines`);
  }));

  const hibernation = (enabled) => action(async () => {
    await mergePatch(clusterPath(state.selected), { spec: { hibernation: { enabled } } });
    notice(`cluster ${state.selected} ${enabled ? 'goes to sleep' : 'wakes up'}`);
  });
  $('hibernate-button').addEventListener('click', hibernation(true));
  $('wake-button').addEventListener('click', hibernation(false));

  const rotation = (op, what) => action(async () => {
    await mergePatch(clusterPath(state.selected), { metadata: { annotations: { [OPERATION]: op } } });
    notice(`${what} of cluster ${state.selected} requested; its conditions and events show the progress`);
  });
  $('rotate-start-button').addEventListener('click', rotation('rotate-credentials-start', 'credential rotation'));
  $('rotate-complete-button').addEventListener('click', rotation('rotate-credentials-complete', 'completion of the credential rotation'));

  $('kubeconfig-button').addEventListener('click', action(async () => {
    const session = state.session;
    const cluster = state.selected;
    const s = await api('GET', `/api/v1/namespaces/${enc(state.namespace)}/secrets/${enc(cluster + '-kubeconfig')}`);
    // Signed out or moved on meanwhile: show nothing.
    if (session !== state.session || cluster !== state.selected) return;
    // Only the Secret Lotse wrote (its label no tenant may set) is the
    // cluster's kubeconfig; one of the same name from elsewhere is not shown.
    if (!s.metadata.labels || s.metadata.labels['lotse.dev/cluster'] !== cluster) {
      throw new Error(`Secret ${s.metadata.name} is not the kubeconfig Lotse wrote for cluster ${cluster}; Lotse replaces it`);
    }
    const text = atob((s.data && s.data.kubeconfig) || '');
    $('kubeconfig-text').value = text;
    const link = $('kubeconfig-download');
    if (link.href.startsWith('blob:')) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([text], { type: 'application/yaml' }));
    link.download = cluster + '.kubeconfig';
    $('kubeconfig').hidden = false;
  }));

  $('delete-button').addEventListener('click', () => {
    $('delete-confirm').hidden = false;
  });
  $('delete-confirm').addEventListener('click', action(async () => {
    const name = state.selected;
    await api('DELETE', clusterPath(name));
    $('delete-confirm').hidden = true;
    notice(`cluster ${name} is being deleted`);
  }));
}

document.addEventListener('DOMContentLoaded', async () => {
  wire();
  $('app').hidden = true;
  if (state.token) {
    try {
      await signIn(state.token);
    } catch (e) {
      showError(e.message);
    }
  }
});
