"""Federated cluster with 302 redirect, the seed's second variant.

The node asks the shared store where the callee is registered; if it is another node, it answers
302 with ``Contact: <sip:user@home_ip>`` so FreeSWITCH calls that node directly and this one leaves
the signalling path. Configuration (``[route_params]``): ``freeswitch`` (media servers: the address
group ``freeswitch_group``, also a ``[permissions]`` group; or the ``[dispatcher]`` set ``freeswitch_set``),
``domain`` (the users' domain, to rebuild the AoR after a redirect), ``private_ip`` (this node's ``sip_addr``),
``collection`` (``userlocation``) and ``retry_after`` (seconds, 5). The seed's block::

    $avp(short_aor) = $tU + "@" + $td;
    cache_raw_query("mongodb:instance1", "{\"find\":\"userlocation\", \"query\":{\"aor\":...}}", "$avp(aor_doc)");
    $avp(home_ip) = $json(aor_doc/home_ip);
    if ($avp(home_ip) == null) { sl_send_reply(405, "Not Allowed"); exit; }
    if ($avp(home_ip) != $avp(private_ip)) { $branch = "sip:" + $tU + "@" + $avp(home_ip);
                                             send_reply(302, "Moved Temporarily"); exit; }
    lookup("location", "m", "sip:" + $tU + "@sip.domain.com");  switch ($retcode) { ... }

Where the seed lets a failed ``cache_raw_query`` fall through to ``home_ip == null`` (405: "registered
nowhere, do not retry"), a query that failed, timed out or was refused because the store is
overloaded is answered 503 with Retry-After: the user may well be registered, this node could not
ask. Likewise the local lookup's -3 (an internal error) is 500, not the "Not Here" of -1.
"""

from edgeproxy.routing import LookupResult

from edgeproxy_routes._common import common_prelude, from_freeswitch, relay_or_error, to_freeswitch


async def request_route(msg):
    if await common_prelude(msg):
        return
    if not from_freeswitch(msg):
        await to_freeswitch(msg)
        return

    # build AoR without "sip:" and ask the store for its home_ip
    short_aor = f"{msg.tU}@{msg.td}"
    try:
        docs = await msg.cache_raw_query(
            {"find": msg.params.get("collection", "userlocation"), "filter": {"aor": short_aor}})
    except Exception as exc:  # the store failed, timed out or is overloaded: FreeSWITCH should try elsewhere
        msg.xlog(f"STORE QUERY FAILED: {exc}", "warn")
        msg.append_to_reply(f"Retry-After: {msg.params.get('retry_after', 5)}")
        msg.sl_send_reply(503, "Location Store Unavailable")
        return
    homes = [d.get("home_ip") for d in docs if d.get("home_ip")]
    private_ip = msg.params.get("private_ip")

    # 405 if the contact is registered nowhere, so FreeSWITCH doesn't retry
    if not homes:
        msg.xlog("CONTACT NOT REGISTERED IN MONGO")
        msg.sl_send_reply(405, "Not Allowed")
        return

    # registered, but not on this server: redirect to the node that has it
    if private_ip not in homes:
        msg.xlog("LOCAL CONTACT NOT FOUND")
        msg.append_branch(f"sip:{msg.tU}@{homes[0]}")
        msg.send_reply(302, "Moved Temporarily")
        return

    # recreate the original AoR with the domain (the 302 rewrote the Request-URI's host)
    original_aor = f"sip:{msg.tU}@{msg.params.get('domain', msg.td)}"
    match await msg.lookup("location", "m", original_aor):
        case LookupResult.FOUND:
            msg.xlog("LOCAL CONTACT FOUND IN MEMORY")
            relay_or_error(msg)
        case LookupResult.NOT_FOUND:
            msg.sl_send_reply(404, "Not Here")
        case LookupResult.METHOD_NOT_ALLOWED:
            msg.sl_send_reply(405, "Not Allowed")
        case LookupResult.ERROR:
            msg.sl_send_reply(500, "Server Internal Error")
