// A SIP.js 0.21 user agent in Node, driven by pytest over the line protocol of common.mjs; the same
// options (password and auth_user included), events and commands as jssip_client.mjs. SIP.js takes its
// media handling from a factory (UserAgentOptions.sessionDescriptionHandlerFactory): here one that
// offers and answers a fixed SDP.

import {
  Inviter,
  Registerer,
  RegistererState,
  SessionState,
  UserAgent,
} from "sip.js";
import { commands, emit, fixedSdp, installWebSocket, options } from "./common.mjs";

const opts = options();
installWebSocket(opts);

class FixedSdpHandler {
  constructor() {
    this.remote = null;
  }

  async getDescription() {
    return { body: fixedSdp(this.remote ? "answer" : "offer"), contentType: "application/sdp" };
  }

  hasDescription(contentType) {
    return contentType === "application/sdp";
  }

  async setDescription(sdp) {
    this.remote = sdp;
  }

  sendDtmf() {
    return false;
  }

  close() {}
}

let session = null;

function track(s, direction) {
  session = s;
  const base = { call_id: s.request ? s.request.callId : undefined, direction };
  s.stateChange.addListener((state) => {
    if (state === SessionState.Established) {
      emit("accepted", base);
      emit("confirmed", base);
    } else if (state === SessionState.Terminated) {
      emit("ended", { ...base, status: s._lastStatus });
    }
  });
  s.delegate = {
    onBye: (bye) => {
      emit("bye_received", base);
      bye.accept(); // with an onBye delegate, answering the BYE is up to us
    },
    onAck: () => emit("ack_received", base),
  };
}

const ua = new UserAgent({
  uri: UserAgent.makeURI(opts.uri),
  // digest credentials (SIP.js answers a 401/407 once, again after stale=true); "" = none, the user of uri
  authorizationPassword: opts.password || "",
  authorizationUsername: opts.auth_user || "",
  transportOptions: { server: opts.ws, connectionTimeout: 5, keepAliveInterval: 0 },
  sessionDescriptionHandlerFactory: () => new FixedSdpHandler(),
  logBuiltinEnabled: false,
  logLevel: "error",
  userAgentString: "SIP.js 0.21 (edgeproxy tests)",
  delegate: {
    onConnect: () => emit("connected"),
    onDisconnect: (error) => emit("disconnected", { error: Boolean(error) }),
    onInvite: (invitation) => {
      track(invitation, "incoming");
      emit("incoming", {
        call_id: invitation.request.callId,
        from: invitation.remoteIdentity.uri.toString(),
        ruri: invitation.request.ruri.toString(),
      });
      const answer = opts.answer === undefined ? "auto" : opts.answer;
      if (typeof answer === "number") {
        invitation.reject({ statusCode: answer });
      } else if (answer === "auto") {
        // SIP.js has sent 180 Ringing by itself already
        setTimeout(() => {
          if (invitation.state === SessionState.Initial || invitation.state === SessionState.Establishing) {
            invitation.accept().catch((err) => emit("error", { where: "accept", message: String(err) }));
          }
        }, opts.ring_ms || 0);
      }
    },
  },
});

const registerer = new Registerer(ua, { expires: opts.expires || 300 });
registerer.stateChange.addListener((state) => {
  if (state === RegistererState.Registered) {
    emit("registered", { contact: registerer.contacts });
  } else if (state === RegistererState.Unregistered) {
    emit("unregistered");
  }
});

function register() {
  return registerer.register({
    requestDelegate: {
      onReject: (response) =>
        emit("registration_failed", { status: response.message.statusCode, reason: response.message.reasonPhrase }),
    },
  });
}

commands(async (cmd) => {
  switch (cmd.cmd) {
    case "call": {
      const target = UserAgent.makeURI(cmd.target);
      const inviter = new Inviter(ua, target);
      track(inviter, "outgoing");
      emit("calling", { call_id: inviter.request.callId, target: cmd.target });
      await inviter.invite({
        requestDelegate: {
          onProgress: (response) => emit("progress", { status: response.message.statusCode }),
          onReject: (response) => {
            inviter._lastStatus = response.message.statusCode;
            emit("failed", { status: response.message.statusCode, originator: "remote" });
          },
        },
      });
      break;
    }
    case "answer":
      await session.accept();
      break;
    case "hangup":
      if (session.state === SessionState.Established) {
        await session.bye();
      } else if (session instanceof Inviter) {
        await session.cancel();
      } else {
        await session.reject();
      }
      break;
    case "unregister":
      await registerer.unregister();
      break;
    case "register":
      await register();
      break;
    case "stop":
      await ua.stop();
      setTimeout(() => process.exit(0), 200);
      break;
    default:
      emit("error", { where: "command", message: `unknown command ${cmd.cmd}` });
  }
});

await ua.start();
emit("started", { lib: "sip.js" });
if (opts.register !== false) await register();
