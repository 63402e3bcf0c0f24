"""Federated cluster topology, the seed's default (``cluster_check_addr`` + global lookup).

Configuration (``[route_params]``): ``cluster_id`` (1), ``freeswitch`` (the media servers' addresses:
the address group ``freeswitch_group``, also a ``[permissions]`` group; or the ``[dispatcher]`` set
``freeswitch_set``; see ``routes/_common.py``) and ``retry_after`` (seconds, 5), with ``[cluster]`` and ``[federation]`` set up. The seed's block::

    if (cluster_check_addr(1, "$si")) {            # from a node of the cluster
        lookup("location", "m");                   #   local contacts only
        switch ($retcode) { case 1: t_relay(); case -1: sl_send_reply(404, "Not Here");
                            case -2: sl_send_reply(405, "Not Allowed");
                            case -3: sl_send_reply(500, "Server Internal Error"); }
    } else if ($si == FreeSWITCH) {                # from a media server
        lookup("location", "g");                   #   global: local contacts + the nodes holding the AoR
        switch ($retcode) { case 1: t_relay(); case -1: sl_send_reply(404, "Not Found");
                            case -2: sl_send_reply(405, "Not Allowed");
                            case -3: append_to_reply("Retry-After: 5\r\n");
                                     sl_send_reply(503, "Service Unavailable"); }
    }

The one departure from the seed as first written (``case -1: case -3: 404``): -3 is "the lookup could
not be done" — the store failed, timed out, or this node refused the query because too many were
waiting — not "nobody has this user". A 404 there makes FreeSWITCH give up on a registered user (or
fail over as if she were gone); 503 with Retry-After says "this node, not the user, is the problem:
try the other node, or me later", and local users are still found (-3 only when nothing is local).
"""

from edgeproxy.routing import LookupResult

from edgeproxy_routes._common import common_prelude, from_freeswitch, relay_or_error, to_freeswitch


async def request_route(msg):
    if await common_prelude(msg):
        return
    cluster_id = msg.params.get("cluster_id", 1)

    # if from a node in the cluster
    if msg.cluster_check_addr(cluster_id, msg.si):
        # do local lookup
        match await msg.lookup("location", "m"):
            case LookupResult.FOUND:
                msg.xlog("LOCAL CONTACT FOUND")
                relay_or_error(msg)
            case LookupResult.NOT_FOUND:
                msg.sl_send_reply(404, "Not Here")
            case LookupResult.METHOD_NOT_ALLOWED:
                msg.sl_send_reply(405, "Not Allowed")
            case LookupResult.ERROR:
                msg.sl_send_reply(500, "Server Internal Error")
        return

    # if from FreeSWITCH
    if from_freeswitch(msg):
        # do global lookup to find where the endpoint is registered
        match await msg.lookup("location", "g"):
            case LookupResult.FOUND:
                msg.xlog("CONTACT FOUND, RELAY TO ENDPOINT OR OPENSIPS NODE")
                relay_or_error(msg)
            case LookupResult.NOT_FOUND:
                msg.sl_send_reply(404, "Not Found")
            case LookupResult.METHOD_NOT_ALLOWED:
                msg.sl_send_reply(405, "Not Allowed")
            case LookupResult.ERROR:
                # the location store failed or is overloaded (logged by the lookup): not "not found"
                msg.append_to_reply(f"Retry-After: {msg.params.get('retry_after', 5)}")
                msg.sl_send_reply(503, "Service Unavailable")
        return

    await to_freeswitch(msg)
