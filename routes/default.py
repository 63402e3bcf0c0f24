"""The default route: a registrar and stateful proxy, as OpenSIPS's stock ``opensips.cfg`` does.

    route {
        if (!mf_process_maxfwd_header(10)) { sl_send_reply(483, "Too Many Hops"); exit; }
        if (has_totag()) {
            if (loose_route()) { t_relay(); exit; }
            if (is_method("ACK")) { if (t_check_trans()) t_relay(); exit; }
            sl_send_reply(404, "Not here"); exit;
        }
        if (loose_route()) { sl_send_reply(403, "Preload Route denied"); exit; }
        if (is_method("REGISTER")) {
            if (!is_myself("$rd")) { sl_send_reply(403, "Forbidden"); exit; }
            # with [auth]: www_authorize / www_challenge / db_check_to / consume_credentials
            save("location"); exit;
        }
        if (!is_myself("$rd")) { sl_send_reply(403, "Relaying Forbidden"); exit; }  # no open relay
        # with [auth]: callers of our domains prove who they are (proxy_authorize, db_check_from)
        lookup("location", "m");  switch ($retcode) { ... }
        record_route(); t_relay();
    }
"""

from edgeproxy.routing import LookupResult

from edgeproxy_routes._common import authenticate, common_prelude, start_dialog


async def request_route(msg):
    # Max-Forwards, in-dialog requests, pre-loaded Routes, OPTIONS pings to the node, REGISTER
    # (with [auth]: challenge, check_to): the block every shipped route shares
    if await common_prelude(msg):
        return

    if not msg.is_myself():
        msg.sl_send_reply(403, "Relaying Forbidden")  # no open relay
        return
    if msg.is_myself(msg.request.from_.uri) and not await authenticate(msg, register=False):
        return  # a caller claiming to be one of our users must prove it; calls from elsewhere need not

    code = await msg.lookup("location", "m")
    if code == LookupResult.NOT_FOUND or code == LookupResult.ERROR:
        msg.sl_send_reply(404, "Not Found")
        return
    if code == LookupResult.METHOD_NOT_ALLOWED:
        msg.sl_send_reply(405, "Method Not Allowed")
        return

    msg.record_route()
    # the call is kept as a dialog (BYE both ways when a party vanishes); our users' calls count
    # against route_params.max_calls_per_user
    if not start_dialog(msg, limited=msg.is_myself(msg.request.from_.uri)):
        return
    if not msg.t_relay():
        msg.sl_reply_error()
