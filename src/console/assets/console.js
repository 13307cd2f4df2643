// The operator console's script: refreshes the figures and lists every 5 s from
// /console/api/summary without reloading, and runs Replay in place. The page works without
// it (the figures are in the HTML as served).
(() => {
  'use strict';
  const REFRESH_MS = 5000;
  const shown = new Map();   // fragment name -> last HTML put in
  const results = new Map(); // raw event id -> what its Replay answered
  const state = () => document.getElementById('refresh-state');

  function say(text) {
    const el = state();
    if (el && el.textContent !== text) el.textContent = text;
  }

  function applyFigures(figures) {
    for (const el of document.querySelectorAll('[data-figure]')) {
      const value = figures[el.dataset.figure];
      if (value !== undefined && el.textContent !== value) el.textContent = value;
    }
  }

  function applyFragments(html) {
    // Keep the keyboard where it was when the element it was on is redrawn.
    const active = document.activeElement;
    const focusId = active && active.dataset ? active.dataset.id : undefined;
    for (const el of document.querySelectorAll('[data-fragment]')) {
      const name = el.dataset.fragment;
      const value = html[name];
      if (value === undefined || shown.get(name) === value) continue;
      el.innerHTML = value;
      shown.set(name, value);
    }
    for (const [id, text] of results) showResult(id, text);
    if (focusId && document.activeElement !== active) {
      const again = document.querySelector(`[data-action="replay"][data-id="${CSS.escape(focusId)}"]`);
      if (again) again.focus();
    }
  }

  function showResult(id, text) {
    for (const out of document.querySelectorAll(`output[data-result="${CSS.escape(id)}"]`)) {
      if (out.textContent !== text) out.textContent = text;
    }
  }

  // One refresh at a time, the next one 5 s after the last answer; none while the page is
  // hidden, and none once signed out (each would be a refused request).
  let timer = null;
  let signedOut = false;
  let inFlight = false;

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (!signedOut && !document.hidden) timer = setTimeout(refresh, REFRESH_MS);
  }

  async function refresh() {
    timer = null;
    inFlight = true;
    try {
      const answer = await fetch('/console/api/summary', {
        credentials: 'same-origin',
        headers: { Accept: 'application/json' },
        cache: 'no-store',
      });
      if (answer.status === 401) {
        signedOut = true;
        say('signed out: open the console with ?token=… again');
        return;
      }
      if (!answer.ok) throw new Error(`answer ${answer.status}`);
      const body = await answer.json();
      applyFigures(body.figures);
      applyFragments(body.html);
      say(`refreshed every ${REFRESH_MS / 1000} s, last at ${new Date().toTimeString().slice(0, 8)}`);
    } catch (e) {
      say(`could not refresh (${e.message}); trying again`);
    } finally {
      inFlight = false;
      schedule();
    }
  }

  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
    } else if (timer === null && !inFlight) {
      refresh();
    }
  });

  async function replay(button) {
    const id = button.dataset.id;
    button.disabled = true;
    results.set(id, 'replaying…');
    showResult(id, 'replaying…');
    let text;
    try {
      const answer = await fetch(`/console/replay/${encodeURIComponent(id)}`, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { Accept: 'application/json' },
      });
      const body = await answer.json().catch(() => ({}));
      if (answer.ok) {
        text = `replayed: ${body.outcome}${body.error ? ` (${body.error})` : ''}`;
      } else {
        text = `replay failed: ${body.error || `answer ${answer.status}`}`;
      }
    } catch (e) {
      text = `replay failed: ${e.message}`;
    }
    results.set(id, text);
    showResult(id, text);
    button.disabled = false;
  }

  document.addEventListener('click', (event) => {
    const button = event.target.closest('[data-action="replay"]');
    if (button) replay(button);
  });

  document.addEventListener('DOMContentLoaded', () => {
    for (const el of document.querySelectorAll('[data-fragment]')) {
      shown.set(el.dataset.fragment, el.innerHTML);
    }
    say(`refreshed every ${REFRESH_MS / 1000} s`);
    schedule();
  });
})();
