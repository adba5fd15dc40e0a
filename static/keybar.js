// The on-screen key bar of terminal pages (link and console): keys a phone keyboard lacks.
// Shown on touch screens only (or with ?keys=1). Needs share.js (loaded first, `defer`):
// it sends through window.cmdopShare.send, and a sticky Ctrl rewrites the next typed key
// through window.cmdopShare.setInputFilter.
(() => {
  'use strict';

  const bar = document.getElementById('keybar');
  const share = window.cmdopShare;
  if (!bar || !share || typeof share.send !== 'function') return;
  const touch = navigator.maxTouchPoints > 0 || window.matchMedia('(pointer: coarse)').matches;
  const forced = new URLSearchParams(location.search).get('keys') === '1';
  if (share.readOnly || !(touch || forced)) return;
  bar.hidden = false;

  const KEYS = {
    esc: '\x1b',
    tab: '\t',
    up: '\x1b[A',
    down: '\x1b[B',
    right: '\x1b[C',
    left: '\x1b[D',
    pipe: '|',
    tilde: '~',
  };
  const ctrlButton = bar.querySelector('[data-key="ctrl"]');
  let ctrl = false;

  // Ctrl+letter is the letter's code & 0x1f; also Ctrl+@ [ \ ] ^ _ and space.
  function withCtrl(text) {
    if (text.length !== 1) return text;
    const code = text.toUpperCase().charCodeAt(0);
    if (code >= 0x40 && code <= 0x5f) return String.fromCharCode(code & 0x1f);
    if (text === ' ') return '\x00';
    return text;
  }

  function setCtrl(on) {
    ctrl = on;
    ctrlButton.setAttribute('aria-pressed', on ? 'true' : 'false');
    share.setInputFilter(
      on
        ? (text) => {
            setCtrl(false);
            return withCtrl(text);
          }
        : null
    );
  }

  async function paste() {
    let text = '';
    try {
      text = await navigator.clipboard.readText();
    } catch (_) {
      text = window.prompt('Paste here') || '';
    }
    if (text) share.send(text);
  }

  bar.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-key]');
    if (!button) return;
    const key = button.dataset.key;
    if (key === 'ctrl') setCtrl(!ctrl);
    else if (key === 'paste') paste();
    else if (KEYS[key]) share.send(KEYS[key]);
    // Keep the terminal focused, so the phone keyboard stays up.
    if (window.term && key !== 'paste') window.term.focus();
  });
  // Buttons must not steal focus from the terminal on touch.
  bar.addEventListener('mousedown', (event) => event.preventDefault());
})();
