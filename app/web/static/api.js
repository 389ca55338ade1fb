// The page talks to the public /v1 API with its session cookie; writes carry the CSRF token.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)squeeze_csrf=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function parse(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    const error = body && body.error ? body.error : { code: "http_" + response.status, message: text || response.statusText };
    throw new ApiError(response.status, error.code, error.message);
  }
  return body;
}

export async function get(path) {
  return parse(await fetch(path, { credentials: "same-origin" }));
}

export async function send(method, path, body) {
  const headers = { "X-CSRF-Token": csrfToken() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return parse(await fetch(path, {
    method, credentials: "same-origin", headers, body: body === undefined ? undefined : JSON.stringify(body),
  }));
}

// Multipart upload with progress (fetch has no upload progress; XMLHttpRequest does).
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("X-CSRF-Token", csrfToken());
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { body = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        const error = body && body.error ? body.error : { code: "http_" + xhr.status, message: xhr.statusText };
        reject(new ApiError(xhr.status, error.code, error.message));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "network", "the upload was interrupted; check the connection"));
    xhr.send(form);
  });
}

export async function listAll(path) {
  const items = [];
  let cursor = null;
  do {
    const page = await get(path + (path.includes("?") ? "&" : "?") + "limit=100" + (cursor ? "&cursor=" + cursor : ""));
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < 1000);
  return items;
}
