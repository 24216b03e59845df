// The dashboard's only way to the host: kiln's JSON API with the signed-in key as the bearer.
// The key lives in this tab's session storage (gone when the tab closes) and is sent to this
// origin only. Nothing here caches data: every page reads what it shows through the key.

const KEY = "kiln.dashboard.key";

export const session = {
  key: sessionStorage.getItem(KEY),
  /** What `/api/v1/dashboard/session` said about the key. */
  info: null,
};

/** Called when the host refuses the key (revoked meanwhile): the app signs out. */
let onRefused = () => {};
export function whenRefused(f) { onRefused = f; }

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.key}`, ...extra };
}

async function answer(res) {
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!res.ok) {
    const message = (data && data.error) || `${res.status} ${res.statusText}`;
    if (res.status === 401 && session.info) onRefused(message);
    throw new ApiError(res.status, message);
  }
  return data;
}

/** A JSON request; `body` is sent as JSON. Throws ApiError with the host's message. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `the host did not answer (${e.message}); is kiln serve running?`);
  }
  return answer(res);
}

/** A query string from an object, leaving out empty values; arrays are comma-joined. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "" || (Array.isArray(v) && !v.length)) continue;
    q.set(k, Array.isArray(v) ? v.join(",") : String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** Checks a key without keeping it: what the host says it is, or an ApiError. */
export async function checkKey(key) {
  let res;
  try {
    res = await fetch("/api/v1/dashboard/session", { headers: { Authorization: `Bearer ${key}` } });
  } catch (e) {
    throw new ApiError(0, `the host did not answer (${e.message}); is kiln serve running?`);
  }
  const text = await res.text();
  let data = null;
  try { data = JSON.parse(text); } catch { /* not JSON */ }
  if (!res.ok) throw new ApiError(res.status, (data && data.error) || `${res.status} ${res.statusText}`);
  return data;
}

export function signIn(key, info) {
  session.key = key;
  session.info = info;
  sessionStorage.setItem(KEY, key);
}

export function signOut() {
  session.key = null;
  session.info = null;
  sessionStorage.removeItem(KEY);
}

/**
 * Uploads one file as the raw request body, or several as `multipart/form-data` (a part each),
 * with upload progress (fetch has none), resolving to the JSON answer. `progress(fraction)` runs
 * while the bytes go; `sent()` once they all went.
 */
export function upload(path, files, { progress = () => {}, sent = () => {} } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Authorization", `Bearer ${session.key}`);
    let body = files[0];
    if (files.length > 1) {
      // The browser sets the multipart content type with its boundary.
      body = new FormData();
      for (const file of files) body.append("component", file, file.name);
    } else {
      xhr.setRequestHeader("Content-Type", "application/wasm");
    }
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) progress(e.loaded / e.total); };
    xhr.upload.onload = () => sent();
    xhr.onerror = () => reject(new ApiError(0, "the upload failed: the host closed the connection"));
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, (data && data.error) || `${xhr.status} ${xhr.statusText}`));
    };
    xhr.send(body);
  });
}

/**
 * Follows one of kiln's Server-Sent Events streams (EventSource cannot send a bearer, so this
 * reads the stream with fetch). Calls `onEvent(name, data)` for each event until the stream
 * ends or `signal` aborts; resolves when it ends.
 */
export async function stream(path, onEvent, signal) {
  const res = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!res.ok) return answer(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}
