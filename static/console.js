// cmdop web console pages. Plain ES2020, no build step, no inline script (strict CSP).
//
// - Copy buttons: `data-copy="<input id>"` copies that input's value.
// - QR code: `#qr[data-url]` gets an image of the URL (static/vendor/qrcode.js, global `qrcode`).
// - Forms with `data-confirm` ask before submitting.
// - Machines page: listens to /console/events (server-sent events, `machines`: every row of
//   the fleet as JSON) and updates the online dots, last-seen times and counts in place; a
//   machine that comes or goes reloads the page.
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

  copyButtons();
  qrCode();
  confirmForms();
  liveMachines();
})();
