// A JsSIP 3.13 user agent in Node, driven by pytest over the line protocol of common.mjs.
//
// Options (JSON argument): uri (sip:alice@example.test), ws (wss://127.0.0.1:PORT), origin (optional),
// password and auth_user (optional: digest credentials; auth_user defaults to the user of uri),
// expires (300), answer ("auto": 180 then 200 after ring_ms; "manual": wait for {"cmd":"answer"};
// or a status code such as 486 to reject), ring_ms (0), register (true), deadline (s).
// Events: connected, disconnected, registered, registration_failed, unregistered, incoming,
// progress, accepted, confirmed, ended, failed, wire, ws_open, ws_close, ws_refused, error.
// Commands: call {target}, answer, hangup, message {target, body | size}, unregister, register, stop.

import JsSIP from "jssip";
import { commands, emit, installPeerConnection, installWebSocket, options } from "./common.mjs";

const opts = options();
installWebSocket(opts);
installPeerConnection();
JsSIP.debug.disable("JsSIP:*");

const socket = new JsSIP.WebSocketInterface(opts.ws);
// Digest credentials only when given: JsSIP answers a 401/407 once (again after stale=true), itself
const credentials = {};
if (opts.password !== undefined) credentials.password = opts.password;
if (opts.auth_user !== undefined) credentials.authorization_user = opts.auth_user;
const ua = new JsSIP.UA({
  sockets: [socket],
  uri: opts.uri,
  ...credentials,
  register: opts.register !== false,
  register_expires: opts.expires || 300,
  session_timers: false,
  user_agent: `JsSIP ${JsSIP.version} (edgeproxy tests)`,
  connection_recovery_min_interval: 2,
  connection_recovery_max_interval: 30,
  no_answer_timeout: 60,
});

let session = null;
let outgoingRequest = null; // the INVITE of the session ua.call() just created (RTCSession has no public getter)
const NO_MEDIA = { mediaConstraints: { audio: false, video: false } };

function track(s, request) {
  session = s;
  const base = { call_id: request ? request.call_id : undefined, direction: s.direction };
  s.on("progress", (e) => emit("progress", { ...base, status: e.response ? e.response.status_code : undefined }));
  s.on("accepted", (e) => emit("accepted", { ...base, originator: e.originator }));
  s.on("confirmed", (e) => emit("confirmed", { ...base, originator: e.originator }));
  s.on("ended", (e) => emit("ended", { ...base, originator: e.originator, cause: e.cause }));
  s.on("failed", (e) =>
    emit("failed", {
      ...base,
      originator: e.originator,
      cause: e.cause,
      status: e.message && e.message.status_code ? e.message.status_code : undefined,
    }),
  );
}

ua.on("connected", () => emit("connected"));
ua.on("disconnected", (e) => emit("disconnected", { error: Boolean(e && e.error), code: e && e.code }));
ua.on("registered", (e) =>
  emit("registered", { status: e.response.status_code, contact: e.response.getHeaders("Contact") }),
);
ua.on("unregistered", (e) => emit("unregistered", { status: e && e.response ? e.response.status_code : undefined }));
ua.on("registrationFailed", (e) =>
  emit("registration_failed", {
    cause: e.cause,
    status: e.response ? e.response.status_code : undefined,
    reason: e.response ? e.response.reason_phrase : undefined,
  }),
);
ua.on("newRTCSession", (e) => {
  if (e.originator !== "remote") {
    outgoingRequest = e.request; // emitted synchronously inside ua.call()
    return;
  }
  const s = e.session;
  track(s, e.request);
  emit("incoming", {
    call_id: e.request.call_id,
    from: e.request.from.uri.toString(),
    ruri: e.request.ruri.toString(),
  });
  const answer = opts.answer === undefined ? "auto" : opts.answer;
  if (typeof answer === "number") {
    s.terminate({ status_code: answer });
  } else if (answer === "auto") {
    setTimeout(() => {
      if (s.isInProgress()) s.answer(NO_MEDIA);
    }, opts.ring_ms || 0);
  }
});

commands(async (cmd) => {
  switch (cmd.cmd) {
    case "call": {
      outgoingRequest = null;
      const s = ua.call(cmd.target, { ...NO_MEDIA, rtcOfferConstraints: { offerToReceiveAudio: true } });
      track(s, outgoingRequest);
      emit("calling", { call_id: outgoingRequest ? outgoingRequest.call_id : undefined, target: cmd.target });
      break;
    }
    case "answer":
      session.answer(NO_MEDIA);
      break;
    case "hangup":
      session.terminate();
      break;
    case "message":
      ua.sendMessage(cmd.target, cmd.body !== undefined ? cmd.body : "x".repeat(cmd.size || 10), {
        eventHandlers: {
          succeeded: (e) => emit("message_sent", { status: e.response.status_code }),
          failed: (e) => emit("message_failed", { cause: e.cause, status: e.response ? e.response.status_code : undefined }),
        },
      });
      break;
    case "unregister":
      ua.unregister();
      break;
    case "register":
      ua.register();
      break;
    case "stop":
      ua.stop();
      setTimeout(() => process.exit(0), 500);
      break;
    default:
      emit("error", { where: "command", message: `unknown command ${cmd.cmd}` });
  }
});

ua.start();
emit("started", { lib: "jssip", version: JsSIP.version });
