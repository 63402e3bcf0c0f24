"""Federated cluster topology, the seed's default (``cluster_check_addr`` + global lookup).

Configuration (``[route_params]``): ``cluster_id`` (1) and ``freeswitch`` (the media servers'
addresses), with ``[cluster]`` and ``[federation]`` set up. Line for line, the seed's block::

    if (cluster_check_addr(1, "$si")) {            # from a node of the cluster
        lookup("location", "m");                   #   local contacts only
        switch ($retcode) { case 1: t_relay(); case -1: case -3: sl_send_reply(404, "Not Here");
                            case -2: sl_send_reply(405, "Not Allowed"); }
    } else if ($si == FreeSWITCH) {                # from a media server
        lookup("location", "g");                   #   global: local contacts + the nodes holding the AoR
        switch ($retcode) { ... same, "Not Found" ... }
    }
"""

from edgeproxy.routing import LookupResult

from routes._common import common_prelude, relay_or_error, to_freeswitch


async def request_route(msg):
    if await common_prelude(msg):
        return
    cluster_id = msg.params.get("cluster_id", 1)
    freeswitch = msg.params.get("freeswitch", [])

    # if from a node in the cluster
    if msg.cluster_check_addr(cluster_id, msg.si):
        # do local lookup
        match await msg.lookup("location", "m"):
            case LookupResult.FOUND:
                msg.log("LOCAL CONTACT FOUND")
                relay_or_error(msg)
            case LookupResult.NOT_FOUND | LookupResult.ERROR:
                msg.sl_send_reply(404, "Not Here")
            case LookupResult.METHOD_NOT_ALLOWED:
                msg.sl_send_reply(405, "Not Allowed")
        return

    # if from FreeSWITCH
    if msg.si in freeswitch:
        # do global lookup to find where the endpoint is registered
        match await msg.lookup("location", "g"):
            case LookupResult.FOUND:
                msg.log("CONTACT FOUND, RELAY TO ENDPOINT OR OPENSIPS NODE")
                relay_or_error(msg)
            case LookupResult.NOT_FOUND | LookupResult.ERROR:
                msg.sl_send_reply(404, "Not Found")
            case LookupResult.METHOD_NOT_ALLOWED:
                msg.sl_send_reply(405, "Not Allowed")
        return

    to_freeswitch(msg)
