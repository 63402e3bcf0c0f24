"""The default route: a registrar and stateful proxy, as OpenSIPS's stock ``opensips.cfg`` does.

    route {
        if (!mf_process_maxfwd_header(10)) { sl_send_reply(483, "Too Many Hops"); exit; }
        if (has_totag()) {
            if (loose_route()) { t_relay(); exit; }
            if (is_method("ACK")) { if (t_check_trans()) t_relay(); exit; }
            sl_send_reply(404, "Not here"); exit;
        }
        if (loose_route()) { sl_send_reply(403, "Preload Route denied"); exit; }
        if (!is_myself("$rd")) { sl_send_reply(403, "Relaying Forbidden"); exit; }  # no open relay
        if (is_method("REGISTER")) {
            # with [auth]: www_authorize / www_challenge / db_check_to / consume_credentials
            save("location"); exit;
        }
        # with [auth]: callers of our domains prove who they are (proxy_authorize, db_check_from)
        lookup("location", "m");  switch ($retcode) { ... }
        record_route(); t_relay();
    }
"""

from edgeproxy.routing import LookupResult

from routes._common import authenticate


async def request_route(msg):
    if not msg.mf_process_maxfwd_header(10):
        msg.sl_send_reply(483, "Too Many Hops")
        return

    if msg.has_totag():
        # in-dialog requests follow the route set recorded at dialog creation
        if msg.loose_route():
            msg.t_relay()
        elif msg.is_method("ACK"):
            pass  # an ACK that matches no transaction and carries no route: nothing to do
        else:
            msg.sl_send_reply(404, "Not here")
        return

    # initial requests: a pre-loaded Route naming this node is removed by loose_route() (§16.4);
    # one naming anybody else is refused, as OpenSIPS's stock script does
    if msg.loose_route():
        if not msg.is_method("ACK"):
            msg.sl_send_reply(403, "Preload Route denied")
        return

    if not msg.is_myself():
        msg.sl_send_reply(403, "Relaying Forbidden")
        return

    if msg.is_method("OPTIONS") and msg.rU is None and msg.is_myself():
        msg.sl_send_reply(200, "OK")  # keep-alive pings (e.g. FreeSWITCH gateways) to the node itself
        return
    if msg.is_method("REGISTER"):
        if await authenticate(msg, register=True):
            await msg.save("location")
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
    if not msg.t_relay():
        msg.sl_reply_error()
