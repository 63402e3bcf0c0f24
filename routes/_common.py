"""What every shipped route does before its own logic: OpenSIPS's stock sanity and in-dialog blocks,
the registrar and, with an ``[auth]`` section, digest authentication of the endpoints. Kept in one
place so the three seed variants differ only where the seed does."""

from __future__ import annotations

from edgeproxy.routing import AuthResult

NAT_TEST = "private-contact,diff-ip-src-via,diff-port-src-via"
"""nathelper's classic ``nat_uac_test("19")``: a private Contact, or a Via that is not where the
request came from. The sender is then reached at its source address: its contacts by ``save()``
(``msg.nat``), its dialogs by the flow token of our Record-Route."""
NAT_TEST_STREAM = "private-contact,diff-ip-src-via"
"""The same over TCP, TLS and WebSocket without the port test: a connection's source port is an
ephemeral one whatever the Via says, which is no sign of NAT (a phone flagged NAT for it would be
dialled at that dead port, not at its Contact, once its connection closed)."""


async def common_prelude(msg) -> bool:
    """Handle what is not specific to a topology; True when the request has been dealt with."""
    if not msg.mf_process_maxfwd_header(10):
        msg.sl_send_reply(483, "Too Many Hops")
        return True
    if msg.has_totag():
        if msg.loose_route():
            msg.t_relay()
        elif not msg.is_method("ACK"):
            msg.sl_send_reply(404, "Not here")
        return True
    if msg.loose_route():
        if not msg.is_method("ACK"):
            msg.sl_send_reply(403, "Preload Route denied")
        return True
    if msg.is_method("OPTIONS") and msg.rU is None and msg.is_myself():
        msg.sl_send_reply(200, "OK")  # keep-alive pings (e.g. FreeSWITCH gateways) to the node itself
        return True
    # nathelper, on by default (OpenSIPS: if (nat_uac_test("19")) setbflag(NAT);)
    msg.nat = msg.nat_uac_test(NAT_TEST if msg.proto == "udp" else NAT_TEST_STREAM)
    if msg.is_method("REGISTER"):
        if not msg.is_myself():
            msg.sl_send_reply(403, "Forbidden")
        elif await authenticate(msg, register=True):
            await msg.save("location")
        return True
    if msg.is_method("INVITE|SUBSCRIBE|REFER"):
        msg.record_route()  # dialog-forming: in-dialog requests (BYE, NOTIFY, ...) come back through us
    return False


async def authenticate(msg, *, register: bool) -> bool:
    """With ``[auth]``, the stock scripts' authentication block; True when the request may go on::

        if (!www_authorize("", "subscriber")) {      # proxy_authorize for anything but REGISTER
            www_challenge("", "auth"); exit;          # 401 (407), stale=true after a stale nonce
        }
        if (!db_check_to()) { sl_send_reply(403, "Forbidden auth ID"); exit; }  # db_check_from()
        consume_credentials();

    One departure: -5 (the subscriber store did not answer) is 503 with Retry-After, not another
    challenge -- a phone asked for its password again would tell its user the password is wrong.
    """
    if not msg.auth_enabled:
        return True
    code = await (msg.www_authorize("", "subscriber") if register else msg.proxy_authorize("", "subscriber"))
    if code == AuthResult.GENERIC_ERROR:
        msg.append_to_reply(f"Retry-After: {msg.params.get('retry_after', 5)}")
        msg.sl_send_reply(503, "Service Unavailable")
        return False
    if code != AuthResult.AUTHORIZED:
        if register:
            msg.www_challenge("", "auth")
        else:
            msg.proxy_challenge("", "auth")
        return False
    if not (msg.check_to() if register else msg.check_from()):
        msg.sl_send_reply(403, "Forbidden auth ID")
        return False
    msg.consume_credentials()
    return True


def start_dialog(msg, *, limited: bool) -> bool:
    """An initial INVITE becomes a dialog (OpenSIPS ``create_dialog("B")``; ``route_params.dialog_flags``
    replaces the flags, e.g. ``"BPp"`` to ping both parties): the node then ends the call with a BYE to
    both sides when a party's connection closes, the lifetime runs out or a pinged party is gone. With
    ``route_params.max_calls_per_user`` (0, the default: no limit) and ``limited`` (the caller is one
    of our users), a user already in that many calls is refused (``max_calls_status``, 486, and
    ``max_calls_reason``, "Busy Here")::

        if (get_profile_size("caller", "$au") >= $var(max)) { sl_send_reply(486, "Busy Here"); exit; }
        create_dialog("B"); set_dlg_profile("caller", "$au");

    The user is the authenticated one (``$au``), else the From user. False when refused (answered)."""
    if not msg.is_method("INVITE") or msg.has_totag():
        return True
    limit = int(msg.params.get("max_calls_per_user", 0) or 0)
    user = (msg.au or msg.fU) if limited and limit > 0 else None
    if user and msg.get_profile_size("caller", user) >= limit:
        msg.xlog(f"{user} is in {limit} calls already: refused")
        msg.sl_send_reply(int(msg.params.get("max_calls_status", 486)), msg.params.get("max_calls_reason", "Busy Here"))
        return False
    msg.create_dialog(str(msg.params.get("dialog_flags", "B")))
    if user:
        msg.set_dlg_profile("caller", user)
    return True


def relay_or_error(msg, *, limited: bool = False) -> None:
    """``if (!t_relay()) { xlog(...); sl_reply_error(); }``, with the INVITE's dialog first
    (:func:`start_dialog`)."""
    if not start_dialog(msg, limited=limited):
        return
    if not msg.t_relay():
        msg.xlog("UNABLE TO RELAY TO CONTACT")
        msg.sl_reply_error()
    else:
        msg.xlog("RELAY TO CONTACT SUCCESSFUL", "debug")


def from_freeswitch(msg) -> bool:
    """Whether the request comes from a media server::

        if (check_source_address(1) || ds_is_in_list($si, 0, 1)) { ... }

    An address of the group ``route_params.freeswitch_group`` (1) -- rows of ``[permissions]`` or
    OpenSIPS's ``address`` table, and every IP of ``route_params.freeswitch``, which the node makes
    rows of that group -- or, with ``[dispatcher]``, a destination of the FreeSWITCH set
    (``route_params.freeswitch_set``, 1)."""
    if msg.check_source_address(msg.params.get("freeswitch_group", 1)):
        return True
    return msg.ds_enabled and msg.ds_is_in_list(msg.si, 0, msg.params.get("freeswitch_set", 1))


async def to_freeswitch(msg) -> None:
    """Calls from endpoints go to the media servers (the seed's '...'); with ``[auth]``, only once the
    caller has proven who she is (407 challenge, ``db_check_from``).

    With ``[dispatcher]``: a server of the FreeSWITCH set chosen by ``ds_select_dst(set, alg, "f")``
    (``route_params.freeswitch_set``, 1; ``freeswitch_algorithm``, 4: round robin), and the next one
    when it fails with 408 -- including no reply at all within ``freeswitch_timeout`` seconds (2,
    ``$T_fr_timeout``) -- or 5xx (:func:`freeswitch_failed`); 503 with Retry-After when no server of
    the set is up. Without it: the first address of ``route_params.freeswitch``, or 404 when
    none is configured."""
    if not await authenticate(msg, register=False):
        return
    if msg.ds_enabled:
        if msg.ds_select_dst(msg.params.get("freeswitch_set", 1), msg.params.get("freeswitch_algorithm", 4),
                             "f") != 1:
            msg.xlog("NO MEDIA SERVER AVAILABLE", "warn")
            msg.append_to_reply(f"Retry-After: {msg.params.get('retry_after', 5)}")
            msg.sl_send_reply(503, "Service Unavailable")
            return
        # a server that does not answer at all within this many seconds is failed over (tm's fr_timeout)
        msg.T_fr_timeout = msg.params.get("freeswitch_timeout", 2)
        msg.t_on_failure(freeswitch_failed)
        relay_or_error(msg, limited=True)
        return
    freeswitch = msg.params.get("freeswitch", [])
    if not freeswitch:
        msg.sl_send_reply(404, "Not Found")
        return
    msg.du = f"sip:{freeswitch[0]}"
    relay_or_error(msg, limited=True)


def freeswitch_failed(msg) -> None:
    """failure_route of a call sent to the FreeSWITCH set::

        if (t_check_status("408|5[0-9][0-9]") && ds_next_dst()) { t_on_failure("fs"); t_relay(); }

    408 (the server did not answer) and 5xx (it could not take the call) move the call to the next
    server of the set; anything else -- 486 Busy, 603 Decline, 404 -- is the callee's answer and goes
    back to the caller as it is. When no server is left the best reply goes back."""
    if not msg.t_check_status("^(408|5[0-9][0-9])$"):
        return
    code = msg.reply_code
    if msg.ds_next_dst() != 1:
        msg.xlog(f"FREESWITCH FAILED WITH {code}, NO OTHER SERVER LEFT", "warn")
        return
    msg.xlog(f"FREESWITCH FAILED WITH {code}, TRYING {msg.du}")
    msg.t_on_failure(freeswitch_failed)
    msg.t_relay()
