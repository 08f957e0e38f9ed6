// Bulwark console: live regions refreshed from server-sent events, and the rollout forms
// sent with the console's CSRF header. No framework; the server renders (and escapes)
// every region, this only swaps them in.
(() => {
  'use strict';
  const statusEl = document.getElementById('live-status');
  const regions = () => Array.from(document.querySelectorAll('[data-live]'));
  const topicsOf = (el) => el.dataset.live.split(/\s+/);
  let pending = new Set();
  let timer = null;
  let busy = false;

  function setStatus(cls, text) {
    if (!statusEl) return;
    statusEl.className = 'live-status ' + cls;
    statusEl.textContent = text;
  }

  function schedule(topic) {
    if (!regions().some((r) => topicsOf(r).includes(topic))) return;
    pending.add(topic);
    if (!timer) timer = setTimeout(refresh, 300);
  }

  // Where focus was, to put it back after a swap (by id, else by link target).
  function focusKey(region) {
    const a = document.activeElement;
    if (!a || !region.contains(a)) return null;
    if (a.id) return '#' + CSS.escape(a.id);
    const href = a.getAttribute('href');
    return href ? 'a[href="' + CSS.escape(href) + '"]' : null;
  }

  async function refresh() {
    timer = null;
    if (busy) { timer = setTimeout(refresh, 300); return; }
    const topics = pending;
    pending = new Set();
    busy = true;
    try {
      const res = await fetch(location.href, { headers: { 'X-Bulwark-Console': '1' }, cache: 'no-store' });
      if (!res.ok) return;
      const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
      for (const region of regions()) {
        if (!topicsOf(region).some((t) => topics.has(t))) continue;
        const fresh = doc.getElementById(region.id);
        if (!fresh) continue;
        const key = focusKey(region);
        region.innerHTML = fresh.innerHTML;
        if (key) { const again = region.querySelector(key); if (again) again.focus(); }
      }
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
    } catch (e) {
      setStatus('down', 'Refresh failed; retrying');
    } finally {
      busy = false;
    }
  }

  function connect() {
    const es = new EventSource('/live');
    es.addEventListener('hello', () => setStatus('live', 'Live'));
    es.onopen = () => setStatus('live', 'Live');
    es.onerror = () => setStatus('down', 'Reconnecting…');
    for (const t of ['fleet', 'rollout', 'cluster', 'events']) es.addEventListener(t, () => schedule(t));
  }

  document.addEventListener('submit', async (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute('data-post')) return;
    ev.preventDefault();
    const out = document.getElementById('action-result');
    const button = form.querySelector('button');
    if (button) button.disabled = true;
    let ok = false;
    let message;
    try {
      const res = await fetch(form.action, {
        method: 'POST',
        headers: { 'X-Bulwark-Console': '1', 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(new FormData(form)),
      });
      const body = await res.json().catch(() => ({ ok: false, message: 'HTTP ' + res.status }));
      ok = Boolean(body.ok);
      message = body.message;
    } catch (e) {
      message = 'The console did not answer: ' + e;
    } finally {
      if (button) button.disabled = false;
    }
    if (out) {
      out.className = 'result ' + (ok ? 'ok' : 'error');
      out.setAttribute('role', ok ? 'status' : 'alert');
      out.textContent = message;
      out.scrollIntoView({ block: 'nearest' });
    }
    if (ok) { schedule('rollout'); schedule('fleet'); }
  });

  connect();
})();
