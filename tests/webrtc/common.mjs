// Shared plumbing of the JsSIP and SIP.js test clients: the line protocol with pytest, a WebSocket that
// traces every SIP frame, and a stand-in for WebRTC media (signalling only: a fixed SDP).
//
// Protocol. The client is started with one argument, a JSON object of options (see the client scripts).
// It writes one JSON object per line on stdout: {"event": NAME, ...}; pytest waits for events by name.
// It reads one JSON object per line on stdin: {"cmd": NAME, ...}. Every client exits by itself after
// `deadline` seconds (default 120), so a forgotten process cannot outlive the test run for long.

import readline from "node:readline";
import WebSocket from "ws";

export function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, t: Date.now() / 1000, ...fields }) + "\n");
}

export function options() {
  const opts = JSON.parse(process.argv[2] || "{}");
  const deadline = Number(opts.deadline || 120);
  setTimeout(() => {
    emit("deadline", { seconds: deadline });
    process.exit(3);
  }, deadline * 1000).unref();
  process.on("uncaughtException", (err) => {
    emit("error", { where: "uncaughtException", message: String(err && err.stack ? err.stack : err) });
  });
  process.on("unhandledRejection", (err) => {
    emit("error", { where: "unhandledRejection", message: String(err && err.stack ? err.stack : err) });
  });
  return opts;
}

export function commands(handler) {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", async (line) => {
    if (!line.trim()) return;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (err) {
      emit("error", { where: "command", message: `not JSON: ${line}` });
      return;
    }
    try {
      await handler(cmd);
    } catch (err) {
      emit("error", { where: `command ${cmd.cmd}`, message: String(err && err.stack ? err.stack : err) });
    }
  });
  rl.on("close", () => {
    // stdin closed: pytest went away; leave (the library's own clean-up is not awaited)
    setTimeout(() => process.exit(0), 200).unref();
  });
}

// The `ws` package as the browser's WebSocket (Node 20 has none): every SIP message in and out is
// reported as a "wire" event, and an Origin can be sent the way a browser would.
export function installWebSocket(opts) {
  class TracingWebSocket extends WebSocket {
    constructor(url, protocols, wsOptions = {}) {
      const extra = { ...wsOptions };
      if (opts.origin) extra.origin = opts.origin;
      super(url, protocols, extra);
      this.addEventListener("message", (e) => emit("wire", { dir: "in", text: String(e.data) }));
      this.addEventListener("open", () => emit("ws_open", { protocol: this.protocol }));
      this.addEventListener("close", (e) => emit("ws_close", { code: e.code, reason: String(e.reason || "") }));
      this.on("unexpected-response", (req, res) => {
        emit("ws_refused", { status: res.statusCode });
        req.destroy();
      });
    }

    send(data, ...rest) {
      emit("wire", { dir: "out", text: String(data) });
      return super.send(data, ...rest);
    }
  }
  globalThis.WebSocket = TracingWebSocket;
  return TracingWebSocket;
}

export function fixedSdp(kind) {
  const id = Math.floor(Math.random() * 1e9);
  return [
    "v=0",
    `o=- ${id} 1 IN IP4 127.0.0.1`,
    `s=edgeproxy ${kind}`,
    "t=0 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
    "c=IN IP4 0.0.0.0",
    "a=rtpmap:111 opus/48000/2",
    "a=rtpmap:0 PCMU/8000",
    "a=sendrecv",
    "",
  ].join("\r\n");
}

// Just enough of RTCPeerConnection for JsSIP's signalling: offers and answers are a fixed SDP, ICE
// gathering is always complete, and nothing is ever sent or received.
export class FakePeerConnection extends EventTarget {
  constructor() {
    super();
    this.iceGatheringState = "complete";
    this.iceConnectionState = "new";
    this.connectionState = "new";
    this.signalingState = "stable";
    this.localDescription = null;
    this.remoteDescription = null;
  }

  async createOffer() {
    return { type: "offer", sdp: fixedSdp("offer") };
  }

  async createAnswer() {
    return { type: "answer", sdp: fixedSdp("answer") };
  }

  async setLocalDescription(desc) {
    this.localDescription = desc;
    this.signalingState = desc.type === "offer" ? "have-local-offer" : "stable";
  }

  async setRemoteDescription(desc) {
    this.remoteDescription = desc;
    this.signalingState = desc.type === "offer" ? "have-remote-offer" : "stable";
  }

  addTrack() {}
  getSenders() { return []; }
  getReceivers() { return []; }
  getTransceivers() { return []; }
  getLocalStreams() { return []; }
  getRemoteStreams() { return []; }
  close() { this.signalingState = "closed"; }
}

export function installPeerConnection() {
  globalThis.window = globalThis;
  globalThis.RTCPeerConnection = FakePeerConnection;
  globalThis.RTCSessionDescription = class RTCSessionDescription {
    constructor(init) {
      this.type = init.type;
      this.sdp = init.sdp;
    }
  };
}
