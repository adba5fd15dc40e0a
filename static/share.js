// cmdop share-link terminal page. Plain ES2020, no build step, no inline script (strict CSP).
//
// Globals from the vendored UMD builds (loaded before this file, all with `defer`):
//   Terminal                     static/vendor/xterm.js
//   FitAddon.FitAddon            static/vendor/addon-fit.js
//   WebLinksAddon.WebLinksAddon  static/vendor/addon-web-links.js
//
// Protocol (see CONTRACT.md "Share links in the browser"):
//   WebSocket at <page path>/ws, binary frames = terminal bytes both ways,
//   text frames = JSON control messages:
//     browser -> server  {"type":"resize","cols":N,"rows":N}
//     server -> browser  {"type":"ready","session":"<id>","offset":N}
//                        {"type":"exit","code":N}
//                        {"type":"notice","text":"..."}
//   Close codes: 1000 shell exited, 4001 link expired, 4002 link revoked,
//   4003 machine offline, 4008 refused by policy, 4010 the machine asks for its
//   attach password; anything else is a network problem: reconnect to
//   <path>/ws?session=<id>&offset=<bytes received>.
//
// Attach password (4010): the page shows #unlock, POSTs {"password"} as JSON to
// <path>/unlock; 204 sets an HttpOnly cookie (this script never sees the token)
// and the page connects again; 403/429 answer {"error","message","retry_after"}.
//
// The console's terminal page (/console/m/<id>/terminal) runs this same script: its socket and
// unlock URLs follow the page path the same way, and its unlock request carries the CSRF token
// of <meta name="csrf-token">. There `session` is the shell session's id, and the first
// socket may carry `?attach=<id or name>` (from #terminal[data-attach]).
//
// Test hooks: window.term, window.cmdopSocket, window.cmdopShare,
// document.body.dataset.state ("connecting" | "open" | "closed" | "locked"), #overlay,
// #unlock.
(() => {
  'use strict';

  const RETRY_WINDOW_MS = 30000; // give up reconnecting after this long
  const OFFLINE_RETRY_MS = 3000; // 4003: try again every few seconds
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 5000;
  const RESIZE_DEBOUNCE_MS = 100;
  const TOAST_MS = 6000;

  const CLOSE_NORMAL = 1000;
  const CLOSE_EXPIRED = 4001;
  const CLOSE_REVOKED = 4002;
  const CLOSE_OFFLINE = 4003;
  const CLOSE_POLICY = 4008;
  const CLOSE_PASSWORD = 4010;

  // ---------------------------------------------------------------------------
  // Strict CSP support for xterm's DOM renderer.
  //
  // xterm.js 6 injects <style> elements (theme colours, cell sizes, scrollbar) and sets
  // style="" attributes for 24-bit colours. With `style-src 'self'` the browser refuses
  // both, which leaves the terminal mis-styled (wrong colours and line heights). CSSOM
  // changes are not subject to style-src, so route them there:
  //  - a <style> element made by document.createElement keeps its text in a constructed
  //    stylesheet adopted by the document; the element itself is never inserted (Chrome
  //    checks CSP for any connected <style>, even an empty one);
  //  - setAttribute('style', v) becomes element.style.cssText = v.
  // Only trusted code (xterm) produces this CSS; no page or terminal data reaches it
  // except colours xterm itself formats as #rrggbb.
  const shimmedStyles = new WeakSet();

  function installCspStyleShim() {
    const canConstruct =
      typeof Document !== 'undefined' &&
      'adoptedStyleSheets' in Document.prototype &&
      typeof CSSStyleSheet === 'function' &&
      typeof CSSStyleSheet.prototype.replaceSync === 'function';
    if (!canConstruct) return false;

    const origCreateElement = Document.prototype.createElement;
    Document.prototype.createElement = function createElement(tagName, options) {
      const el = origCreateElement.call(this, tagName, options);
      if (typeof tagName === 'string' && tagName.toLowerCase() === 'style') shimStyleElement(this, el);
      return el;
    };

    const origSetAttribute = Element.prototype.setAttribute;
    Element.prototype.setAttribute = function setAttribute(name, value) {
      if (typeof name === 'string' && name.toLowerCase() === 'style' && this.style) {
        this.style.cssText = String(value);
        return undefined;
      }
      return origSetAttribute.call(this, name, value);
    };

    // Shimmed <style> elements stay detached: inserting one is a no-op and removing it
    // drops its adopted stylesheet.
    const origAppendChild = Node.prototype.appendChild;
    Node.prototype.appendChild = function appendChild(child) {
      if (shimmedStyles.has(child)) return child;
      return origAppendChild.call(this, child);
    };
    const origInsertBefore = Node.prototype.insertBefore;
    Node.prototype.insertBefore = function insertBefore(child, ref) {
      if (shimmedStyles.has(child)) return child;
      return origInsertBefore.call(this, child, ref);
    };
    const origRemoveChild = Node.prototype.removeChild;
    Node.prototype.removeChild = function removeChild(child) {
      if (shimmedStyles.has(child)) {
        child.remove();
        return child;
      }
      return origRemoveChild.call(this, child);
    };
    return true;
  }

  function shimStyleElement(doc, el) {
    let sheet;
    try {
      sheet = new CSSStyleSheet();
    } catch (_) {
      return; // leave the element alone
    }
    shimmedStyles.add(el);
    let text = '';
    let adopted = false;
    const adopt = () => {
      if (adopted) return;
      doc.adoptedStyleSheets = [...doc.adoptedStyleSheets, sheet];
      adopted = true;
    };
    const drop = () => {
      if (!adopted) return;
      doc.adoptedStyleSheets = doc.adoptedStyleSheets.filter((s) => s !== sheet);
      adopted = false;
    };
    const textProp = {
      configurable: true,
      get: () => text,
      set: (v) => {
        text = v == null ? '' : String(v);
        try {
          sheet.replaceSync(text);
        } catch (err) {
          console.warn('cmdop: could not apply terminal styles', err);
        }
        adopt();
      },
    };
    Object.defineProperty(el, 'textContent', textProp);
    Object.defineProperty(el, 'innerText', textProp);
    Object.defineProperty(el, 'sheet', {
      configurable: true,
      get: () => {
        adopt();
        return sheet;
      },
    });
    el.remove = function remove() {
      drop();
    };
  }

  // ---------------------------------------------------------------------------
  // Page elements and small UI helpers.

  const $ = (id) => document.getElementById(id);
  const container = $('terminal');
  const overlayEl = $('overlay');
  const overlayText = $('overlay-text') || overlayEl;
  const bannerEl = $('banner');
  const toastEl = $('toast');
  const statusText = $('status-text');
  const countdownEl = $('countdown');

  const readOnly = container.dataset.readOnly === 'true';
  // The console's terminal page may name a shell session to join (`data-attach`, an id or a
  // name); the first socket asks for it, reconnects then resume by the id `ready` gave.
  const attachTarget = container.dataset.attach || '';
  const deadlineMs = Number(container.dataset.deadlineMs);

  function setState(state) {
    document.body.dataset.state = state;
    if (statusText) {
      const words = { open: 'connected', closed: 'disconnected', locked: 'password required' };
      statusText.textContent = words[state] || 'connecting';
    }
  }

  function showOverlay(message) {
    overlayText.textContent = message;
    overlayEl.hidden = false;
  }

  function hideOverlay() {
    overlayEl.hidden = true;
    overlayText.textContent = '';
  }

  function showBanner(message) {
    bannerEl.textContent = message;
    bannerEl.hidden = false;
  }

  function hideBanner() {
    bannerEl.hidden = true;
    bannerEl.textContent = '';
  }

  let toastTimer = 0;
  function showToast(message) {
    toastEl.textContent = message;
    toastEl.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      toastEl.hidden = true;
    }, TOAST_MS);
  }

  // ---------------------------------------------------------------------------
  // Countdown to the link's deadline. The server closes the socket with 4001 when it
  // passes; the page only displays the time left.

  function formatRemaining(ms) {
    const total = Math.max(0, Math.floor(ms / 1000));
    const d = Math.floor(total / 86400);
    const h = Math.floor((total % 86400) / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = total % 60;
    const pad = (n) => String(n).padStart(2, '0');
    if (d > 0) return `${d}d ${h}h`;
    if (h > 0) return `${h}h ${pad(m)}m`;
    if (m > 0) return `${m}m ${pad(s)}s`;
    return `${s}s`;
  }

  function tickCountdown() {
    if (!countdownEl || !Number.isFinite(deadlineMs)) return;
    const left = Math.max(0, deadlineMs - Date.now());
    countdownEl.textContent = formatRemaining(left);
    countdownEl.classList.toggle('soon', left > 60000 && left <= 300000);
    countdownEl.classList.toggle('urgent', left <= 60000);
  }

  function startCountdown() {
    tickCountdown();
    // Align ticks with whole seconds of the deadline so the display never skips.
    const align = Number.isFinite(deadlineMs) ? (((deadlineMs - Date.now()) % 1000) + 1000) % 1000 : 0;
    setTimeout(() => {
      tickCountdown();
      setInterval(tickCountdown, 1000);
    }, align + 5);
  }

  // ---------------------------------------------------------------------------
  // Terminal.

  installCspStyleShim();

  const term = new Terminal({
    cursorBlink: !readOnly,
    disableStdin: readOnly,
    convertEol: false,
    scrollback: 5000,
    fontSize: 14,
    fontFamily: 'ui-monospace, "SF Mono", "Cascadia Mono", "JetBrains Mono", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace',
    allowProposedApi: false,
    theme: {
      background: '#0d1117',
      foreground: '#e6edf3',
      cursor: '#e6edf3',
      cursorAccent: '#0d1117',
      selectionBackground: '#264f78',
      black: '#484f58',
      red: '#ff7b72',
      green: '#3fb950',
      yellow: '#d29922',
      blue: '#58a6ff',
      magenta: '#bc8cff',
      cyan: '#39c5cf',
      white: '#b1bac4',
      brightBlack: '#6e7681',
      brightRed: '#ffa198',
      brightGreen: '#56d364',
      brightYellow: '#e3b341',
      brightBlue: '#79c0ff',
      brightMagenta: '#d2a8ff',
      brightCyan: '#56d4dd',
      brightWhite: '#ffffff',
    },
  });

  const fitAddon = new FitAddon.FitAddon();
  term.loadAddon(fitAddon);
  // Open links in a new tab without an opener or a referrer: the page URL is the secret.
  term.loadAddon(
    new WebLinksAddon.WebLinksAddon((event, uri) => {
      let url;
      try {
        url = new URL(uri);
      } catch (_) {
        return;
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') return;
      window.open(url.href, '_blank', 'noopener,noreferrer');
    })
  );
  term.open(container);
  window.term = term;

  function fit() {
    try {
      fitAddon.fit();
    } catch (_) {
      // not measurable yet (hidden or zero-sized); a later resize will fix it
    }
  }
  fit();
  if (!readOnly) term.focus();

  let resizeTimer = 0;
  const scheduleFit = () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(fit, RESIZE_DEBOUNCE_MS);
  };
  window.addEventListener('resize', scheduleFit);
  if (typeof ResizeObserver === 'function') new ResizeObserver(scheduleFit).observe(container);
  if (document.fonts && document.fonts.ready) document.fonts.ready.then(fit, () => {});

  // ---------------------------------------------------------------------------
  // Connection.

  const encoder = new TextEncoder();
  let socket = null;
  let sessionId = null; // from the server's "ready"
  let offset = 0; // terminal bytes received so far (server's numbering)
  let skipBytes = 0; // bytes the server replays that we already have
  let exitCode = null;
  let finished = false; // a final overlay is shown; never reconnect again
  let retryStarted = 0; // when the current run of reconnect attempts began
  let retryAttempt = 0;
  let retryTimer = 0;
  let lostMessage = 'Connection lost'; // final overlay when reconnecting gives up

  window.cmdopShare = {
    get session() {
      return sessionId;
    },
    get offset() {
      return offset;
    },
    get exitCode() {
      return exitCode;
    },
    readOnly,
  };

  function wsUrl() {
    const url = new URL(location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.pathname = location.pathname.replace(/\/+$/, '') + '/ws';
    url.search = '';
    url.hash = '';
    if (sessionId !== null) {
      url.searchParams.set('session', sessionId);
      url.searchParams.set('offset', String(offset));
    } else if (attachTarget) {
      url.searchParams.set('attach', attachTarget);
    }
    return url.href;
  }

  function sendJson(msg) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(msg));
  }

  function sendResize() {
    if (term.cols > 0 && term.rows > 0) sendJson({ type: 'resize', cols: term.cols, rows: term.rows });
  }

  function sendBytes(bytes) {
    if (readOnly || finished) return; // the server drops read-only input anyway
    if (socket && socket.readyState === WebSocket.OPEN && bytes.length > 0) socket.send(bytes);
  }

  // The on-screen key bar (keybar.js) may rewrite typed text once (a sticky Ctrl).
  let inputFilter = null;
  function sendText(data) {
    const filter = inputFilter;
    sendBytes(encoder.encode(filter ? filter(data) : data));
  }
  window.cmdopShare.send = sendText;
  window.cmdopShare.setInputFilter = (fn) => {
    inputFilter = typeof fn === 'function' ? fn : null;
  };

  term.onData((data) => sendText(data));
  // onBinary carries raw bytes as a "binary string" (one char per byte, 0-255),
  // e.g. legacy mouse reports: send them as they are, not UTF-8 encoded.
  term.onBinary((data) => {
    const bytes = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 0xff;
    sendBytes(bytes);
  });
  term.onResize(() => sendResize());

  function handleControl(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (_) {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'ready': {
        const newOffset = Number.isFinite(msg.offset) && msg.offset >= 0 ? msg.offset : 0;
        const sameSession = sessionId !== null && msg.session === sessionId;
        if (sameSession) {
          if (newOffset < offset) {
            // The replay starts before what is already on screen: drop the overlap
            // (handleOutput counts the dropped bytes back into the offset).
            skipBytes = offset - newOffset;
            offset = newOffset;
          } else {
            if (newOffset > offset) term.write('\r\n\x1b[2m[some output was lost while reconnecting]\x1b[0m\r\n');
            skipBytes = 0;
            offset = newOffset;
          }
        } else {
          if (sessionId !== null) term.write('\r\n\x1b[2m[new session]\x1b[0m\r\n');
          skipBytes = 0;
          offset = newOffset;
        }
        if (typeof msg.session === 'string' || typeof msg.session === 'number') sessionId = String(msg.session);
        break;
      }
      case 'exit':
        if (Number.isFinite(msg.code)) exitCode = msg.code;
        break;
      case 'notice':
        if (typeof msg.text === 'string' && msg.text !== '') showToast(msg.text);
        break;
      default:
        break; // unknown control messages are ignored (forward compatible)
    }
  }

  function handleOutput(buf) {
    let bytes = new Uint8Array(buf);
    if (skipBytes > 0) {
      const n = Math.min(skipBytes, bytes.length);
      skipBytes -= n;
      offset += n;
      bytes = bytes.subarray(n);
    }
    if (bytes.length === 0) return;
    offset += bytes.length;
    term.write(bytes);
  }

  function finish(message) {
    finished = true;
    clearTimeout(retryTimer);
    hideBanner();
    unlockEl.hidden = true;
    showOverlay(message);
    setState('closed');
    term.options.cursorBlink = false;
  }

  function connect() {
    clearTimeout(retryTimer);
    setState('connecting');
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (err) {
      console.error('cmdop: cannot open WebSocket', err);
      finish('This link is not valid');
      return;
    }
    ws.binaryType = 'arraybuffer';
    socket = ws;
    window.cmdopSocket = ws;

    ws.onopen = () => {
      if (ws !== socket) return;
      retryStarted = 0;
      retryAttempt = 0;
      lostMessage = 'Connection lost';
      hideBanner();
      if (!finished) hideOverlay();
      setState('open');
      fit();
      sendResize();
    };

    ws.onmessage = (ev) => {
      if (ws !== socket) return;
      if (typeof ev.data === 'string') handleControl(ev.data);
      else if (ev.data instanceof ArrayBuffer) handleOutput(ev.data);
    };

    ws.onerror = () => {
      // a close event always follows; handled there
    };

    ws.onclose = (ev) => {
      if (ws !== socket) return;
      onClose(ev.code, ev.reason);
    };
  }

  function onClose(code, reason) {
    if (finished) return;
    switch (code) {
      case CLOSE_NORMAL:
        finish(exitCode === null ? 'Session ended' : `Session ended (exit code ${exitCode})`);
        return;
      case CLOSE_EXPIRED:
        finish('This link has expired');
        return;
      case CLOSE_REVOKED:
        finish('This link was revoked');
        return;
      case CLOSE_POLICY:
        finish(reason || 'The connection was refused');
        return;
      case CLOSE_PASSWORD:
        askPassword();
        return;
      case CLOSE_OFFLINE:
        // Wait for the machine to come back: retry every few seconds for up to 30 s.
        lostMessage = 'The machine went offline';
        showOverlay(lostMessage);
        if (!retryStarted) retryStarted = Date.now();
        if (Date.now() - retryStarted >= RETRY_WINDOW_MS) {
          finish(lostMessage);
          return;
        }
        setState('connecting');
        showBanner('Waiting for the machine to come back\u2026');
        retryTimer = setTimeout(connect, OFFLINE_RETRY_MS);
        return;
      default:
        scheduleReconnect();
    }
  }

  function scheduleReconnect() {
    if (!retryStarted) retryStarted = Date.now();
    const elapsed = Date.now() - retryStarted;
    if (elapsed >= RETRY_WINDOW_MS) {
      finish(lostMessage);
      return;
    }
    const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** retryAttempt);
    retryAttempt += 1;
    const jitter = Math.random() * 0.2 * backoff;
    const delay = Math.min(backoff + jitter, RETRY_WINDOW_MS - elapsed);
    setState('connecting');
    showBanner('Reconnecting\u2026');
    retryTimer = setTimeout(connect, delay);
  }

  // ---------------------------------------------------------------------------
  // Attach password.

  const unlockEl = $('unlock');
  const unlockForm = $('unlock-form');
  const unlockInput = $('unlock-password');
  const unlockError = $('unlock-error');
  const unlockSubmit = $('unlock-submit');

  // The console's terminal page carries its session's CSRF token in a meta tag.
  function unlockHeaders() {
    const headers = { 'Content-Type': 'application/json' };
    const csrf = document.querySelector('meta[name="csrf-token"]');
    if (csrf) headers['X-CSRF-Token'] = csrf.content;
    return headers;
  }

  function unlockUrl() {
    return location.pathname.replace(/\/+$/, '') + '/unlock';
  }

  function askPassword(message) {
    clearTimeout(retryTimer);
    hideBanner();
    hideOverlay();
    setState('locked');
    unlockEl.hidden = false;
    unlockSubmit.disabled = false;
    if (message) {
      unlockError.textContent = message;
      unlockError.hidden = false;
    } else {
      unlockError.hidden = true;
    }
    unlockInput.focus();
  }

  async function submitPassword(event) {
    event.preventDefault();
    const password = unlockInput.value;
    if (!password) return;
    unlockSubmit.disabled = true;
    let resp;
    try {
      resp = await fetch(unlockUrl(), {
        method: 'POST',
        credentials: 'same-origin',
        headers: unlockHeaders(),
        body: JSON.stringify({ password }),
      });
    } catch (_) {
      askPassword('Cannot reach the server; try again');
      return;
    }
    unlockInput.value = '';
    if (resp.status === 204) {
      unlockEl.hidden = true;
      unlockError.hidden = true;
      connect();
      return;
    }
    let body = {};
    try {
      body = await resp.json();
    } catch (_) {
      // not JSON: fall back to the status below
    }
    if (body.error === 'expired') return finish('This link has expired');
    if (body.error === 'revoked') return finish('This link was revoked');
    if (body.error === 'invalid') return finish('This link is not valid');
    askPassword(typeof body.message === 'string' && body.message ? body.message : `Refused (${resp.status})`);
  }

  unlockForm.addEventListener('submit', (event) => {
    submitPassword(event);
  });

  // Coming back online: do not wait for the backoff timer.
  window.addEventListener('online', () => {
    if (!finished && retryStarted && (!socket || socket.readyState === WebSocket.CLOSED)) connect();
  });

  startCountdown();
  connect();
})();
