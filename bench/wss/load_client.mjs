// WSS registration + call load generator for edgeproxy (bench/wss_load.py drives it).
//
// Why a hand-written client and not JsSIP/SIP.js: one Node process has to play a thousand or more
// browsers at once at thousands of messages per second. A full SIP library per user would measure the
// library; here the SIP messages come from templates, as SIPp's scenarios do, and the `ws` package
// carries them (one SIP message per WebSocket message, RFC 7118). What the messages look like on the
// wire follows JsSIP: `sip` subprotocol, a random `<12 chars>.invalid` host in Via and Contact,
// `transport=ws` in the Contact, `+sip.instance`/`reg-id` (RFC 5626 outbound).
//
// Started with one argument, a JSON object of options:
//   url           wss://127.0.0.1:PORT            (required)
//   ca            PEM file of the authority to trust for the server's certificate (required)
//   domain        host of the AoRs and Request-URIs, default "127.0.0.1"
//   expires       REGISTER expiry in seconds, default 3600
//   concurrency   WebSocket handshakes in flight at once, default 100
//   deadline      seconds after which the process exits whatever it is doing, default 3600
//   trace         true: write every SIP message in and out to stderr (debugging at low rates)
//
// Line protocol: commands are JSON objects, one per stdin line; every phase answers with exactly one
// JSON line on stdout ({"phase": NAME, ...}). Commands run one at a time, in order:
//   {"cmd":"connect","count":N,"timeout":S}     open connections until N exist, REGISTER each
//   {"cmd":"refresh","rate":R,"secs":S}         R*S REGISTER refreshes over the connections, paced
//   {"cmd":"calls","rate":R,"secs":S,"hold_ms":H}  R*S calls between registered connections, paced
//   {"cmd":"unregister","timeout":S}            REGISTER Expires: 0 on every registered connection
//   {"cmd":"close"}                              close every WebSocket (1000), then {"phase":"closed"}
//   {"cmd":"quit"}                               exit
// Latencies (ms) and completion times (ms since the phase started) are returned raw so the orchestrator
// computes percentiles and rates with bench/load.py's helpers, the same way as for SIPp.
//
// Bounds: every client transaction fails after 32 s without a final response (Timer B/F), every paced
// loop stops after its count or its time, every phase has a time bound, and the process exits by
// itself at `deadline` or when stdin closes.

import crypto from "node:crypto";
import fs from "node:fs";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import readline from "node:readline";
import WebSocket from "ws";

const opts = JSON.parse(process.argv[2] || "{}");
if (!opts.url || !opts.ca) {
  process.stderr.write("usage: node load_client.mjs '{\"url\":\"wss://127.0.0.1:PORT\",\"ca\":\"ca.pem\"}'\n");
  process.exit(2);
}
const URL_ = String(opts.url);
const CA = fs.readFileSync(String(opts.ca));
const DOMAIN = String(opts.domain || "127.0.0.1");
const EXPIRES = Number(opts.expires || 3600);
const CONCURRENCY = Math.max(1, Number(opts.concurrency || 100));
const DEADLINE_S = Number(opts.deadline || 3600);
const TRACE = Boolean(opts.trace);
const T1 = 500; // ms, RFC 3261
const T2 = 4000;
const TX_TIMEOUT = 64 * T1; // Timer B / Timer F: a transaction with no final answer by then has failed
const USER_AGENT = "edgeproxy-bench-wss (ws 8.23.0)";
const ALLOW = "INVITE,ACK,CANCEL,BYE,OPTIONS,MESSAGE,INFO,UPDATE,NOTIFY";

function emit(phase, fields = {}) {
  process.stdout.write(JSON.stringify({ phase, ...fields }) + "\n");
}

setTimeout(() => {
  emit("deadline", { seconds: DEADLINE_S });
  process.exit(3);
}, DEADLINE_S * 1000).unref();
process.on("uncaughtException", (err) => {
  emit("error", { where: "uncaughtException", message: String(err && err.stack ? err.stack : err) });
});

const now = () => performance.now();
const ms3 = (x) => Math.round(x * 1000) / 1000;
const ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789";
function rand(n) {
  const bytes = crypto.randomBytes(n);
  let out = "";
  for (let i = 0; i < n; i++) out += ALNUM[bytes[i] % ALNUM.length];
  return out;
}
const newBranch = () => "z9hG4bK" + rand(16);

// --------------------------------------------------------------------------- a minimal SIP parser
// Enough for the messages a proxy sends a browser: first line, headers in order (compact forms
// expanded), the body. Values of list headers (Via, Record-Route, Route, Contact) are split on
// top-level commas only when asked.

const COMPACT = { v: "via", f: "from", t: "to", i: "call-id", m: "contact", l: "content-length", c: "content-type", k: "supported" };

function parse(text) {
  const end = text.indexOf("\r\n\r\n");
  const head = end < 0 ? text : text.slice(0, end);
  const body = end < 0 ? "" : text.slice(end + 4);
  const lines = head.split("\r\n");
  const headers = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (!line) continue;
    if (line[0] === " " || line[0] === "\t") {
      if (headers.length) headers[headers.length - 1][1] += " " + line.trim();
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const raw = line.slice(0, colon).trim().toLowerCase();
    headers.push([COMPACT[raw] || raw, line.slice(colon + 1).trim()]);
  }
  const first = lines[0] || "";
  const msg = { first, headers, body };
  if (first.startsWith("SIP/2.0 ")) {
    msg.status = parseInt(first.slice(8, 11), 10);
  } else {
    const parts = first.split(" ");
    msg.method = parts[0];
    msg.ruri = parts[1];
  }
  return msg;
}

function header(msg, name) {
  for (const [n, v] of msg.headers) if (n === name) return v;
  return undefined;
}

function splitList(value) {
  const out = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (quoted) {
      if (ch === "\\") i++;
      else if (ch === '"') quoted = false;
    } else if (ch === '"') quoted = true;
    else if (ch === "<") depth++;
    else if (ch === ">") depth--;
    else if (ch === "," && depth === 0) {
      out.push(value.slice(start, i).trim());
      start = i + 1;
    }
  }
  const last = value.slice(start).trim();
  if (last) out.push(last);
  return out;
}

function headerList(msg, name) {
  const out = [];
  for (const [n, v] of msg.headers) if (n === name) out.push(...splitList(v));
  return out;
}

function topBranch(msg) {
  const via = header(msg, "via");
  if (!via) return undefined;
  const m = /;\s*branch=([^;,\s]+)/i.exec(splitList(via)[0] || "");
  return m ? m[1] : undefined;
}

function cseqOf(msg) {
  const [num, method] = (header(msg, "cseq") || "").split(/\s+/);
  return { num: parseInt(num, 10), method: (method || "").toUpperCase() };
}

function tagOf(value) {
  const m = /;\s*tag=([^;>\s]+)/i.exec(value || "");
  return m ? m[1] : undefined;
}

// the URI inside name-addr ("<sip:x@y;transport=ws>;expires=3600" -> "sip:x@y;transport=ws")
function uriOf(value) {
  const m = /<([^>]*)>/.exec(value || "");
  if (m) return m[1];
  return String(value || "").split(";")[0].trim();
}

// --------------------------------------------------------------------------- message templates

function sdp() {
  const id = Math.floor(Math.random() * 1e9);
  return [
    "v=0",
    `o=- ${id} 1 IN IP4 127.0.0.1`,
    "s=edgeproxy wss bench",
    "t=0 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
    "c=IN IP4 0.0.0.0",
    "a=rtpmap:111 opus/48000/2",
    "a=rtpmap:0 PCMU/8000",
    "a=sendrecv",
    "",
  ].join("\r\n");
}

function finish(lines, body = "", contentType = "application/sdp") {
  if (body) lines.push(`Content-Type: ${contentType}`);
  lines.push(`Content-Length: ${Buffer.byteLength(body)}`, "", "");
  return lines.join("\r\n") + body;
}

function registerText(conn, branch, expires) {
  return finish([
    `REGISTER sip:${DOMAIN} SIP/2.0`,
    `Via: SIP/2.0/WSS ${conn.host};branch=${branch};rport`,
    "Max-Forwards: 69",
    `To: <sip:${conn.user}@${DOMAIN}>`,
    `From: <sip:${conn.user}@${DOMAIN}>;tag=${conn.regTag}`,
    `Call-ID: ${conn.regCallId}`,
    `CSeq: ${conn.regCseq} REGISTER`,
    `Contact: <sip:${conn.user}@${conn.host};transport=ws>;+sip.ice;reg-id=1;+sip.instance="<urn:uuid:${conn.instance}>";expires=${expires}`,
    `Expires: ${expires}`,
    `Allow: ${ALLOW}`,
    "Supported: path,gruu,outbound",
    `User-Agent: ${USER_AGENT}`,
  ]);
}

function response(req, status, reason, { toTag, contact, recordRoute = false, body = "" } = {}) {
  const lines = [`SIP/2.0 ${status} ${reason}`];
  for (const via of headerList(req, "via")) lines.push(`Via: ${via}`);
  if (recordRoute) for (const rr of headerList(req, "record-route")) lines.push(`Record-Route: ${rr}`);
  const to = header(req, "to") || "";
  lines.push(
    `From: ${header(req, "from") || ""}`,
    `To: ${toTag && !tagOf(to) ? `${to};tag=${toTag}` : to}`,
    `Call-ID: ${header(req, "call-id") || ""}`,
    `CSeq: ${header(req, "cseq") || ""}`,
  );
  if (contact) lines.push(`Contact: ${contact}`);
  if (status === 405) lines.push(`Allow: ${ALLOW}`);
  lines.push("Supported: outbound", `User-Agent: ${USER_AGENT}`);
  return finish(lines, body);
}

// --------------------------------------------------------------------------- connections

class Conn {
  constructor(index) {
    this.index = index;
    this.user = `w${String(index).padStart(5, "0")}`;
    this.host = `${rand(12)}.invalid`;
    this.instance = crypto.randomUUID();
    this.regCallId = `${rand(22)}`;
    this.regTag = rand(10);
    this.regCseq = 0;
    this.regBusy = false;
    this.registered = false;
    this.ws = null;
    this.open = false;
    this.closing = false;
    this.pending = new Map(); // top Via branch -> client transaction
    this.calls = new Map(); // Call-ID -> call this connection placed (UAC side)
    this.uas = new Map(); // Call-ID -> call this connection answered (UAS side)
  }

  get contact() {
    return `<sip:${this.user}@${this.host};transport=ws>`;
  }

  send(text) {
    if (!this.open) return false;
    if (TRACE) process.stderr.write(`----- ${this.user} out\n${text}\n`);
    this.ws.send(text);
    return true;
  }
}

const conns = [];
let tlsInfo = null; // TLS version and key-exchange group of the first connection
// How late this process's event loop ran during a phase: when it is late, the client (not the proxy) is
// what delays the messages, and the phase's latencies say little about the proxy.
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();
function loopLag() {
  const out = { client_lag_ms_p99: ms3(loopDelay.percentile(99) / 1e6), client_lag_ms_max: ms3(loopDelay.max / 1e6) };
  loopDelay.reset();
  return out;
}
// what the current phase counts besides its own figures (unexpected messages, callee side, closes)
let counters = newCounters();

function newCounters() {
  return {
    unexpected_requests: {},
    unexpected_responses: 0,
    ws_closed: 0,
    callee_invites: 0,
    callee_acks: 0,
    callee_byes: 0,
    callee_no_ack: 0,
    callee_2xx_retrans: 0,
    caller_ack_resent: 0,
    provisional: 0,
  };
}

function bump(map, key) {
  map[key] = (map[key] || 0) + 1;
}

// A client transaction: `onFinal(response | null, reason)` is called exactly once, with null on
// timeout (32 s) or when the connection closes.
function request(conn, text, branch, onFinal) {
  const tx = { t0: now(), onFinal, timer: null };
  tx.timer = setTimeout(() => {
    conn.pending.delete(branch);
    onFinal(null, "timeout");
  }, TX_TIMEOUT);
  conn.pending.set(branch, tx);
  if (!conn.send(text)) {
    clearTimeout(tx.timer);
    conn.pending.delete(branch);
    queueMicrotask(() => onFinal(null, "not_open"));
  }
  return tx;
}

function failPending(conn, reason) {
  for (const [branch, tx] of conn.pending) {
    clearTimeout(tx.timer);
    conn.pending.delete(branch);
    tx.onFinal(null, reason);
  }
  for (const call of conn.uas.values()) clearTimeout(call.retransTimer);
  conn.uas.clear();
}

function onMessage(conn, text) {
  if (TRACE) process.stderr.write(`----- ${conn.user} in\n${text}\n`);
  const msg = parse(text);
  if (msg.status !== undefined) onResponse(conn, msg);
  else if (msg.method) onRequest(conn, msg);
}

function onResponse(conn, msg) {
  if (msg.status < 200) {
    counters.provisional++;
    return;
  }
  const branch = topBranch(msg);
  const tx = branch && conn.pending.get(branch);
  if (!tx) {
    // a 2xx to INVITE retransmitted by the callee (its ACK was late): the dialog ACKs it again
    const call = conn.calls.get(header(msg, "call-id"));
    if (call && call.ackText && cseqOf(msg).method === "INVITE" && msg.status < 300) {
      conn.send(call.ackText);
      counters.caller_ack_resent++;
    } else {
      counters.unexpected_responses++;
    }
    return;
  }
  clearTimeout(tx.timer);
  conn.pending.delete(branch);
  tx.onFinal(msg, String(msg.status));
}

// The callee side: answer an INVITE with 180 then 200 (retransmitted until the ACK, as a UAS core
// does), take the ACK, answer the BYE; anything else gets the answer a browser would give.
function onRequest(conn, req) {
  const callId = header(req, "call-id") || "";
  const inDialog = tagOf(header(req, "to")) !== undefined;
  const method = req.method.toUpperCase();
  const dialog = conn.uas.get(callId);
  if (method === "INVITE" && !inDialog) {
    if (dialog) {
      // a retransmission of the INVITE (the proxy does not send one over a reliable flow)
      if (dialog.last) conn.send(dialog.last);
      return;
    }
    counters.callee_invites++;
    const toTag = rand(10);
    const call = { toTag, acked: false, last: null, retransTimer: null, t0: now() };
    conn.uas.set(callId, call);
    const common = { toTag, contact: conn.contact, recordRoute: true };
    conn.send(response(req, 180, "Ringing", common));
    call.last = response(req, 200, "OK", { ...common, body: sdp() });
    conn.send(call.last);
    let interval = T1;
    const retransmit = () => {
      if (call.acked || !conn.uas.has(callId)) return;
      if (now() - call.t0 >= TX_TIMEOUT) {
        counters.callee_no_ack++;
        conn.uas.delete(callId);
        return;
      }
      counters.callee_2xx_retrans++;
      conn.send(call.last);
      interval = Math.min(2 * interval, T2);
      call.retransTimer = setTimeout(retransmit, interval);
    };
    call.retransTimer = setTimeout(retransmit, interval);
    return;
  }
  if (method === "ACK") {
    if (dialog && !dialog.acked) {
      dialog.acked = true;
      clearTimeout(dialog.retransTimer);
      counters.callee_acks++;
    } else if (!dialog) {
      bump(counters.unexpected_requests, "ACK");
    }
    return; // never answered
  }
  if (method === "BYE") {
    if (dialog) {
      clearTimeout(dialog.retransTimer);
      conn.uas.delete(callId);
      counters.callee_byes++;
      conn.send(response(req, 200, "OK"));
    } else {
      bump(counters.unexpected_requests, "BYE");
      conn.send(response(req, 481, "Call/Transaction Does Not Exist", { toTag: rand(10) }));
    }
    return;
  }
  bump(counters.unexpected_requests, method);
  if (method === "CANCEL") {
    // our INVITEs are answered at once: the CANCEL meets a completed transaction (RFC 3261 §9.2)
    conn.send(dialog ? response(req, 200, "OK", { toTag: dialog.toTag }) : response(req, 481, "Call/Transaction Does Not Exist", { toTag: rand(10) }));
  } else if (inDialog && !dialog && !conn.calls.has(callId)) {
    conn.send(response(req, 481, "Call/Transaction Does Not Exist"));
  } else if (method === "INVITE") {
    conn.send(response(req, 488, "Not Acceptable Here")); // re-INVITE: the bench has no media to change
  } else if (["OPTIONS", "MESSAGE", "INFO", "UPDATE", "NOTIFY"].includes(method)) {
    conn.send(response(req, 200, "OK", { toTag: inDialog ? undefined : rand(10) }));
  } else {
    conn.send(response(req, 501, "Not Implemented", { toTag: inDialog ? undefined : rand(10) }));
  }
}

function openConn(conn) {
  return new Promise((resolve) => {
    const t0 = now();
    let settled = false;
    const done = (ok, reason) => {
      if (settled) return;
      settled = true;
      resolve({ ok, reason, ms: now() - t0 });
    };
    // edgeproxy declines permessage-deflate (memory per connection); not offering it keeps this
    // process's memory flat too
    const ws = new WebSocket(URL_, "sip", { ca: CA, handshakeTimeout: 30000, perMessageDeflate: false });
    conn.ws = ws;
    ws.on("open", () => {
      if (ws.protocol !== "sip") {
        ws.terminate();
        done(false, "no_sip_subprotocol");
        return;
      }
      conn.open = true;
      done(true);
    });
    ws.on("upgrade", (res) => {
      // what this client negotiated (the node's memory per connection depends on the key exchange:
      // a hybrid post-quantum share is kept for the connection's life)
      if (tlsInfo === null && res.socket && typeof res.socket.getProtocol === "function") {
        const key = res.socket.getEphemeralKeyInfo() || {};
        tlsInfo = { tls_version: res.socket.getProtocol(), tls_group: key.name || key.type || null };
      }
    });
    ws.on("message", (data) => onMessage(conn, data.toString("utf8")));
    ws.on("unexpected-response", (req, res) => {
      req.destroy();
      done(false, `http_${res.statusCode}`);
    });
    ws.on("error", (err) => done(false, `error_${err.code || err.message}`));
    ws.on("close", () => {
      const wasOpen = conn.open;
      conn.open = false;
      conn.registered = false;
      if (wasOpen && !conn.closing) counters.ws_closed++;
      failPending(conn, "closed");
      done(false, "closed");
    });
  });
}

function register(conn, expires) {
  return new Promise((resolve) => {
    conn.regBusy = true;
    conn.regCseq++;
    const branch = newBranch();
    const t0 = now();
    request(conn, registerText(conn, branch, expires), branch, (resp, reason) => {
      conn.regBusy = false;
      const ok = resp !== null && resp.status >= 200 && resp.status < 300;
      if (ok) conn.registered = expires > 0;
      resolve({ ok, reason: ok ? "ok" : `register_${reason}`, ms: now() - t0 });
    });
  });
}

// --------------------------------------------------------------------------- phases

function latencyLists() {
  return { lat_ms: [], done_ms: [] };
}

async function connectPhase(cmd) {
  const target = Math.min(Number(cmd.count || 0), 1_000_000);
  const timeoutMs = Number(cmd.timeout || 600) * 1000;
  counters = newCounters();
  const t0 = now();
  const first = conns.length;
  const handshakeMs = [];
  const { lat_ms: registerMs, done_ms: doneMs } = latencyLists();
  const failures = {};
  let next = first;
  let inflight = 0; // handshakes in flight
  let pendingRegs = 0;
  let opened = 0;
  let registered = 0;
  await new Promise((resolve) => {
    const boundTimer = setTimeout(resolve, timeoutMs);
    const check = () => {
      if (next >= target && inflight === 0 && pendingRegs === 0) {
        clearTimeout(boundTimer);
        resolve();
      }
    };
    const pump = () => {
      while (next < target && inflight < CONCURRENCY && now() - t0 < timeoutMs) {
        const conn = new Conn(next++);
        conns.push(conn);
        inflight++;
        openConn(conn).then((res) => {
          inflight--;
          if (!res.ok) {
            bump(failures, res.reason);
          } else {
            opened++;
            handshakeMs.push(ms3(res.ms));
            pendingRegs++;
            register(conn, EXPIRES).then((reg) => {
              pendingRegs--;
              if (reg.ok) {
                registered++;
                registerMs.push(ms3(reg.ms));
                doneMs.push(ms3(now() - t0));
              } else {
                bump(failures, reg.reason);
              }
              check();
            });
          }
          pump();
          check();
        });
      }
      check();
    };
    pump();
  });
  return {
    wanted: target - first, opened, registered, failed: target - first - registered, failures,
    secs: ms3((now() - t0) / 1000), handshake_ms: handshakeMs, lat_ms: registerMs, done_ms: doneMs,
    total_connections: conns.filter((c) => c.open).length, ...(tlsInfo || {}), ...counters,
  };
}

// Fire `total` actions evenly over `secs` seconds (the first at once), catching up after a late tick;
// stops at `total` or at secs + 5 s, whichever comes first. Resolves with the number fired.
function paced(rate, secs, total, fire) {
  const t0 = now();
  let fired = 0;
  return new Promise((resolve) => {
    const tick = () => {
      const elapsed = (now() - t0) / 1000;
      const due = Math.min(total, Math.floor(rate * elapsed) + 1);
      while (fired < due) fire(fired++);
      if (fired >= total || elapsed > secs + 5) {
        resolve(fired);
        return;
      }
      setTimeout(tick, 2);
    };
    tick();
  });
}

// Wait until `isDone()` or `boundMs` passed, checking every 20 ms.
function settle(isDone, boundMs) {
  const t0 = now();
  return new Promise((resolve) => {
    const poll = () => {
      if (isDone() || now() - t0 >= boundMs) resolve();
      else setTimeout(poll, 20);
    };
    poll();
  });
}

async function refreshPhase(cmd) {
  const rate = Number(cmd.rate);
  const secs = Number(cmd.secs);
  const total = Math.max(1, Math.round(rate * secs));
  counters = newCounters();
  const live = conns.filter((c) => c.open && c.registered);
  const t0 = now();
  const { lat_ms: latMs, done_ms: doneMs } = latencyLists();
  const failures = {};
  let ok = 0;
  let failed = 0;
  let cursor = 0;
  const fired = await paced(rate, secs, total, () => {
    // the next connection without a REGISTER in flight (RFC 3261 §10.2: one at a time per Call-ID)
    let conn = null;
    for (let k = 0; k < live.length; k++) {
      const c = live[(cursor + k) % live.length];
      if (!c.regBusy && c.open) {
        conn = c;
        cursor = (cursor + k + 1) % live.length;
        break;
      }
    }
    if (conn === null) {
      failed++;
      bump(failures, "all_connections_busy");
      return;
    }
    register(conn, EXPIRES).then((res) => {
      if (res.ok) {
        ok++;
        latMs.push(ms3(res.ms));
        doneMs.push(ms3(now() - t0));
      } else {
        failed++;
        bump(failures, res.reason);
      }
    });
  });
  failed += total - fired;
  if (total > fired) failures.not_sent = total - fired;
  await settle(() => ok + failed >= total, TX_TIMEOUT + 5000);
  return {
    rate, secs, offered: total, connections: live.length, ok, failed, incomplete: total - ok - failed, failures,
    wall_s: ms3((now() - t0) / 1000), lat_ms: latMs, done_ms: doneMs, ...counters,
  };
}

async function callsPhase(cmd) {
  const rate = Number(cmd.rate);
  const secs = Number(cmd.secs);
  const holdMs = Math.max(0, Number(cmd.hold_ms ?? 1000));
  const total = Math.max(1, Math.round(rate * secs));
  counters = newCounters();
  const live = conns.filter((c) => c.open && c.registered);
  const t0 = now();
  const { lat_ms: inviteMs, done_ms: doneMs } = latencyLists();
  const byeMs = [];
  const failures = {};
  let ok = 0;
  let failed = 0;
  const fail = (call, reason) => {
    if (call.over) return;
    call.over = true;
    call.caller.calls.delete(call.callId);
    failed++;
    bump(failures, reason);
  };
  const half = Math.max(1, Math.floor(live.length / 2));
  const fired = await paced(rate, secs, total, (k) => {
    if (live.length === 0) {
      failed++;
      bump(failures, "no_registered_connection");
      return;
    }
    const caller = live[k % live.length];
    const callee = live[(k + half) % live.length];
    placeCall(caller, callee, holdMs, t0, {
      answered: (ms) => {
        inviteMs.push(ms3(ms));
        doneMs.push(ms3(now() - t0));
      },
      ended: (call, ms) => {
        if (call.over) return;
        call.over = true;
        caller.calls.delete(call.callId);
        byeMs.push(ms3(ms));
        ok++;
      },
      failed: fail,
    });
  });
  failed += total - fired;
  if (total > fired) failures.not_sent = total - fired;
  await settle(() => ok + failed >= total, 2 * TX_TIMEOUT + holdMs + 5000);
  return {
    rate, secs, hold_ms: holdMs, offered: total, connections: live.length, ok, failed,
    incomplete: total - ok - failed, failures, wall_s: ms3((now() - t0) / 1000),
    lat_ms: inviteMs, done_ms: doneMs, bye_ms: byeMs, ...counters,
  };
}

// One dialog, UAC side: INVITE -> (1xx) 200 -> ACK -> hold -> BYE -> 200. ACK and BYE carry the route
// set (the 200's Record-Route, reversed: RFC 3261 §12.1.2) and go to the callee's Contact.
function placeCall(caller, callee, holdMs, phaseT0, on) {
  const callId = `${rand(20)}`;
  const fromTag = rand(10);
  const ruri = `sip:${callee.user}@${DOMAIN}`;
  const from = `<sip:${caller.user}@${DOMAIN}>;tag=${fromTag}`;
  const inviteBranch = newBranch();
  const call = { callId, caller, over: false, ackText: null };
  caller.calls.set(callId, call);
  const body = sdp();
  const invite = finish([
    `INVITE ${ruri} SIP/2.0`,
    `Via: SIP/2.0/WSS ${caller.host};branch=${inviteBranch};rport`,
    "Max-Forwards: 69",
    `To: <${ruri}>`,
    `From: ${from}`,
    `Call-ID: ${callId}`,
    "CSeq: 1 INVITE",
    `Contact: <sip:${caller.user}@${caller.host};transport=ws;ob>`,
    `Allow: ${ALLOW}`,
    "Supported: outbound",
    `User-Agent: ${USER_AGENT}`,
  ], body);
  const t0 = now();
  request(caller, invite, inviteBranch, (resp, reason) => {
    if (resp === null) {
      on.failed(call, `invite_${reason}`);
      return;
    }
    const to = header(resp, "to") || `<${ruri}>`;
    if (resp.status >= 300) {
      // non-2xx: the ACK belongs to the INVITE transaction (same branch, hop by hop, no Route)
      caller.send(finish([
        `ACK ${ruri} SIP/2.0`,
        `Via: SIP/2.0/WSS ${caller.host};branch=${inviteBranch};rport`,
        "Max-Forwards: 69", `To: ${to}`, `From: ${from}`, `Call-ID: ${callId}`, "CSeq: 1 ACK",
      ]));
      on.failed(call, `invite_${resp.status}`);
      return;
    }
    on.answered(now() - t0);
    const routeSet = headerList(resp, "record-route").reverse();
    const target = uriOf(header(resp, "contact"));
    if (!target) {
      on.failed(call, "no_contact_in_200");
      return;
    }
    const inDialog = (method, cseq, branch) => {
      const lines = [`${method} ${target} SIP/2.0`, `Via: SIP/2.0/WSS ${caller.host};branch=${branch};rport`, "Max-Forwards: 69"];
      if (routeSet.length) lines.push(`Route: ${routeSet.join(", ")}`);
      lines.push(`To: ${to}`, `From: ${from}`, `Call-ID: ${callId}`, `CSeq: ${cseq} ${method}`);
      if (method === "BYE") lines.push(`User-Agent: ${USER_AGENT}`);
      return finish(lines);
    };
    call.ackText = inDialog("ACK", 1, newBranch());
    caller.send(call.ackText);
    setTimeout(() => {
      if (call.over) return;
      if (!caller.open) {
        on.failed(call, "bye_not_open");
        return;
      }
      const byeBranch = newBranch();
      const tBye = now();
      request(caller, inDialog("BYE", 2, byeBranch), byeBranch, (byeResp, byeReason) => {
        if (byeResp === null) on.failed(call, `bye_${byeReason}`);
        else if (byeResp.status >= 300) on.failed(call, `bye_${byeResp.status}`);
        else on.ended(call, now() - tBye);
      });
    }, holdMs);
  });
}

async function unregisterPhase(cmd) {
  const timeoutMs = Number(cmd.timeout || 120) * 1000;
  counters = newCounters();
  const live = conns.filter((c) => c.open && c.registered);
  const t0 = now();
  const failures = {};
  let ok = 0;
  let failed = 0;
  let next = 0;
  let inflight = 0;
  await new Promise((resolve) => {
    const bound = setTimeout(resolve, timeoutMs);
    const pump = () => {
      while (next < live.length && inflight < CONCURRENCY) {
        const conn = live[next++];
        inflight++;
        settle(() => !conn.regBusy, TX_TIMEOUT + 1000).then(() => register(conn, 0)).then((res) => {
          inflight--;
          if (res.ok) ok++;
          else {
            failed++;
            bump(failures, res.reason);
          }
          pump();
        });
      }
      if (next >= live.length && inflight === 0) {
        clearTimeout(bound);
        resolve();
      }
    };
    pump();
  });
  return { wanted: live.length, ok, failed, incomplete: live.length - ok - failed, failures, secs: ms3((now() - t0) / 1000), ...counters };
}

async function closePhase() {
  for (const conn of conns) {
    conn.closing = true;
    if (conn.ws && conn.ws.readyState === WebSocket.OPEN) conn.ws.close(1000);
  }
  await settle(() => conns.every((c) => !c.ws || c.ws.readyState === WebSocket.CLOSED), 5000);
  let terminated = 0;
  for (const conn of conns) {
    if (conn.ws && conn.ws.readyState !== WebSocket.CLOSED) {
      conn.ws.terminate();
      terminated++;
    }
  }
  return { connections: conns.length, terminated };
}

// --------------------------------------------------------------------------- the command loop

const PHASES = { connect: connectPhase, refresh: refreshPhase, calls: callsPhase, unregister: unregisterPhase, close: closePhase };
let chain = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    emit("error", { where: "command", message: `not JSON: ${line.slice(0, 200)}` });
    return;
  }
  chain = chain.then(async () => {
    if (cmd.cmd === "quit") process.exit(0);
    const phase = PHASES[cmd.cmd];
    if (!phase) {
      emit("error", { where: "command", message: `unknown command ${cmd.cmd}` });
      return;
    }
    try {
      loopDelay.reset();
      const result = await phase(cmd);
      emit(cmd.cmd, { ...result, ...loopLag() });
    } catch (err) {
      emit("error", { where: `command ${cmd.cmd}`, message: String(err && err.stack ? err.stack : err) });
    }
  });
});
rl.on("close", () => {
  // the orchestrator went away: drop every connection and leave
  for (const conn of conns) if (conn.ws) conn.ws.terminate();
  setTimeout(() => process.exit(0), 200).unref();
});

emit("ready", { pid: process.pid, node: process.version, url: URL_, concurrency: CONCURRENCY });
