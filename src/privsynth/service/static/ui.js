// privsynth service UI: forms send JSON (or multipart) to the API; the job page polls its job. No dependencies.
"use strict";
(function () {
  const main = document.querySelector("main");
  const csrf = { [main.dataset.csrfHeader]: main.dataset.csrf };

  function describe(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("\n");
    if (detail && detail.message) return detail.message;
    return JSON.stringify(detail);
  }

  function value(input) {
    const type = input.dataset.type;
    if (input.type === "checkbox") return input.checked;
    const raw = input.value.trim();
    if (raw === "") return undefined;
    if (type === "number") return Number.isFinite(Number(raw)) ? Number(raw) : raw;
    if (type === "integer") return /^-?\d+$/.test(raw) ? parseInt(raw, 10) : raw;
    if (type === "json") return JSON.parse(raw);
    return raw;
  }

  async function schemaBody(form) {
    const response = await fetch(form.dataset.api);
    const schema = await response.json();
    for (const row of form.querySelectorAll("tr[data-column]")) {
      const column = schema.columns.find((c) => c.name === row.dataset.column);
      for (const box of row.querySelectorAll("input[type=checkbox]")) column[box.name] = box.checked;
    }
    return JSON.stringify(schema);
  }

  async function submit(form, event) {
    event.preventDefault();
    const error = form.querySelector(".error");
    const result = form.querySelector("[data-result]");
    error.textContent = "";
    const headers = { ...csrf };
    let body;
    try {
      if ("multipart" in form.dataset) {
        body = new FormData(form);
      } else if ("schema" in form.dataset) {
        body = await schemaBody(form);
        headers["content-type"] = "application/json";
      } else {
        const data = {};
        for (const input of form.querySelectorAll("[name]")) {
          const v = value(input);
          if (v !== undefined) data[input.name] = v;
          else if (input.tagName === "SELECT") data[input.name] = null;
        }
        body = JSON.stringify(data);
        headers["content-type"] = "application/json";
      }
    } catch (e) {
      error.textContent = `Cannot read the form: ${e.message}`;
      return;
    }
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    try {
      const response = await fetch(form.dataset.api, { method: form.dataset.method, headers, body });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) {
        error.textContent = describe(data.detail) || `${response.status} ${response.statusText}`;
        return;
      }
      const then = form.dataset.then;
      if (form.dataset.show && result) result.textContent = `${form.dataset.show}: ${data[form.dataset.show]}`;
      if (then === "reload") window.location.reload();
      else if (then) window.location.assign(then.replace("{id}", data.id));
    } finally {
      if (button) button.disabled = false;
    }
  }

  for (const form of document.querySelectorAll("form[data-api]")) {
    form.addEventListener("submit", (event) => submit(form, event));
  }

  const job = document.querySelector("[data-job]");
  if (job) {
    const status = document.getElementById("status");
    const bar = document.getElementById("bar");
    const detail = document.getElementById("detail");
    async function poll() {
      const response = await fetch(`/api/jobs/${job.dataset.job}`);
      if (!response.ok) return;
      const data = await response.json();
      status.textContent = data.status;
      status.className = `status-${data.status}`;
      const p = data.progress || {};
      if (p.total) bar.style.width = `${Math.min(100, (100 * p.completed) / p.total)}%`;
      detail.textContent = p.task ? `${p.task} ${p.detail || ""}` : "";
      if (data.status === "done") {
        bar.style.width = "100%";
        document.getElementById("result").innerHTML = `<a href="/releases/${data.release_id}">Open the release</a>`;
        return;
      }
      if (data.status === "failed") {
        document.getElementById("error").textContent = data.error;
        return;
      }
      setTimeout(poll, 1000);
    }
    poll();
  }
})();
