// cmdop web console pages. Plain ES2020, no build step, no inline script (strict CSP).
//
// - Copy buttons: `data-copy="<input id>"` copies that input's value.
// - QR code: `#qr[data-url]` gets an image of the URL (static/vendor/qrcode.js, global `qrcode`).
// - Forms with `data-confirm` ask before submitting.
// - Machines page: listens to /console/events (server-sent events, `machines`: every row of
//   the fleet as JSON) and updates the online dots, last-seen times and counts in place; a
//   machine that comes or goes reloads the page.
// - Machine page, "Run a command" (#run-form): a WebSocket to form[data-socket]; sends
//   {"command","timeout_secs","csrf"} once; binary frames are output (first byte 1 stdout,
//   2 stderr), text frames JSON: started, truncated {limit}, exit {code, timed_out, error,
//   duration_ms, bytes, truncated}. Close 4010: the attach password form is shown.
//   Test hook: document.body.dataset.run = running | done | failed | locked.
// - Machine page, attach password (#machine-unlock-form): POSTs {"password"} as JSON with the
//   CSRF header to form[data-url] (the terminal's unlock endpoint), then reloads.
(() => {
  'use strict';

  function copyButtons() {
    for (const button of document.querySelectorAll('button[data-copy]')) {
      button.addEventListener('click', async () => {
        const input = document.getElementById(button.dataset.copy);
        if (!input) return;
        input.select();
        let done = false;
        try {
          await navigator.clipboard.writeText(input.value);
          done = true;
        } catch (_) {
          done = document.execCommand && document.execCommand('copy');
        }
        button.textContent = done ? 'Copied' : 'Press Ctrl+C';
        setTimeout(() => {
          button.textContent = 'Copy';
        }, 2000);
      });
    }
  }

  function qrCode() {
    const box = document.getElementById('qr');
    if (!box || typeof qrcode !== 'function') return;
    const qr = qrcode(0, 'M');
    qr.addData(box.dataset.url);
    qr.make();
    const img = document.createElement('img');
    img.src = qr.createDataURL(4, 2);
    img.alt = 'QR code of the share link';
    box.appendChild(img);
  }

  function confirmForms() {
    for (const form of document.querySelectorAll('form[data-confirm]')) {
      form.addEventListener('submit', (event) => {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    }
  }

  function updateRow(row, m) {
    const dot = row.querySelector('.dot');
    if (dot) {
      dot.classList.toggle('on', m.online);
      dot.classList.toggle('off', !m.online);
    }
    const state = row.querySelector('.state');
    if (state) state.textContent = m.online ? 'online' : 'offline';
    const seen = row.querySelector('.seen');
    if (seen) {
      seen.textContent = m.last_seen;
      seen.setAttribute('datetime', m.last_seen);
    }
    const sessions = row.querySelector('.sessions');
    if (sessions) sessions.textContent = m.sessions;
    const links = row.querySelector('.links');
    if (links) links.textContent = m.viewers > 0 ? `${m.links} (${m.viewers} watching)` : String(m.links);
  }

  function liveMachines() {
    const table = document.getElementById('machines');
    if (!table || typeof EventSource !== 'function') return;
    const filtered = table.dataset.filtered === 'true';
    const source = new EventSource('/console/events');
    window.cmdopEvents = source;
    source.addEventListener('machines', (event) => {
      let machines;
      try {
        machines = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      const rows = new Map([...table.querySelectorAll('tr[data-id]')].map((r) => [r.dataset.id, r]));
      const known = new Set(machines.map((m) => m.id));
      const changedSet = !filtered && (machines.length !== rows.size || [...rows.keys()].some((id) => !known.has(id)));
      if (changedSet) {
        source.close();
        location.reload();
        return;
      }
      for (const m of machines) {
        const row = rows.get(m.id);
        if (row) updateRow(row, m);
      }
      document.body.dataset.updates = String(Number(document.body.dataset.updates || '0') + 1);
    });
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : '';
  }

  function showUnlock(message) {
    const box = document.getElementById('machine-unlock');
    if (!box) return;
    box.hidden = false;
    const error = document.getElementById('machine-unlock-error');
    if (error && message) {
      error.textContent = message;
      error.hidden = false;
    }
    const input = document.getElementById('machine-unlock-password');
    if (input) input.focus();
  }

  function machineUnlock() {
    const form = document.getElementById('machine-unlock-form');
    if (!form) return;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const input = document.getElementById('machine-unlock-password');
      const submit = document.getElementById('machine-unlock-submit');
      if (!input.value) return;
      submit.disabled = true;
      let resp;
      try {
        resp = await fetch(form.dataset.url, {
          method: 'POST',
          credentials: 'same-origin',
          headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrfToken() },
          body: JSON.stringify({ password: input.value }),
        });
      } catch (_) {
        submit.disabled = false;
        showUnlock('Cannot reach the server; try again');
        return;
      }
      input.value = '';
      submit.disabled = false;
      if (resp.status === 204) {
        location.reload();
        return;
      }
      let body = {};
      try {
        body = await resp.json();
      } catch (_) {
        // not JSON: the status says enough
      }
      showUnlock(typeof body.message === 'string' && body.message ? body.message : `Refused (${resp.status})`);
    });
  }

  function runCommand() {
    const form = document.getElementById('run-form');
    if (!form || typeof WebSocket !== 'function') return;
    const output = document.getElementById('run-output');
    const status = document.getElementById('run-status');
    const truncated = document.getElementById('run-truncated');
    const submit = document.getElementById('run-submit');
    let socket = null;

    const say = (text) => {
      status.textContent = text;
      status.hidden = false;
    };
    const append = (text, isErr) => {
      if (!text) return;
      const span = document.createElement('span');
      if (isErr) span.className = 'stderr';
      span.textContent = text;
      output.appendChild(span);
      output.scrollTop = output.scrollHeight;
    };

    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (socket) return;
      const command = document.getElementById('run-command').value;
      const timeout = Number.parseInt(document.getElementById('run-timeout').value, 10);
      output.textContent = '';
      output.hidden = false;
      truncated.hidden = true;
      submit.disabled = true;
      say('Starting\u2026');
      document.body.dataset.run = 'running';
      const decoders = { 1: new TextDecoder(), 2: new TextDecoder() };
      const url = new URL(form.dataset.socket, location.href);
      url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
      const ws = new WebSocket(url.href);
      ws.binaryType = 'arraybuffer';
      socket = ws;
      window.cmdopRun = ws;
      let exited = false;
      ws.onopen = () => {
        ws.send(JSON.stringify({ command, timeout_secs: Number.isFinite(timeout) && timeout > 0 ? timeout : 0, csrf: csrfToken() }));
      };
      ws.onmessage = (ev) => {
        if (ev.data instanceof ArrayBuffer) {
          const bytes = new Uint8Array(ev.data);
          if (bytes.length < 1) return;
          const tag = bytes[0] === 2 ? 2 : 1;
          append(decoders[tag].decode(bytes.subarray(1), { stream: true }), tag === 2);
          return;
        }
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch (_) {
          return;
        }
        if (msg.type === 'started') {
          say('Running\u2026');
        } else if (msg.type === 'truncated') {
          truncated.textContent = `Output truncated: only the first ${Math.round(msg.limit / 1024)} KiB are shown; the command kept running.`;
          truncated.hidden = false;
        } else if (msg.type === 'exit') {
          exited = true;
          append(decoders[1].decode(), false);
          append(decoders[2].decode(), true);
          const secs = (msg.duration_ms / 1000).toFixed(1);
          let text = `Exit code ${msg.code} after ${secs} s`;
          if (msg.timed_out) text += ' (timed out: killed)';
          if (msg.error) text += ` \u2014 ${msg.error}`;
          if (msg.truncated) text += `; ${msg.bytes} bytes of output in all`;
          say(text);
          document.getElementById('run-status').dataset.code = String(msg.code);
          document.body.dataset.run = 'done';
        }
      };
      ws.onclose = (ev) => {
        socket = null;
        submit.disabled = false;
        if (exited) return;
        if (ev.code === 4010) {
          say('This machine asks for its attach password.');
          document.body.dataset.run = 'locked';
          showUnlock();
          return;
        }
        say(ev.reason || 'The connection was lost before the command ended.');
        document.body.dataset.run = 'failed';
      };
    });
  }

  copyButtons();
  qrCode();
  confirmForms();
  liveMachines();
  machineUnlock();
  runCommand();
})();
