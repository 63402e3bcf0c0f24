"""Serialized failover, the seed's final choice: no cluster, no store.

FreeSWITCH bridges to node X first and to node Y on 404 (``bridge sofia/gateway/X/u|sofia/gateway/Y/u``);
each node only looks in its own memory and answers 404 fast and statelessly when the user is not
there. Configuration (``[route_params]``): ``freeswitch`` (the media servers, the address group
``freeswitch_group``), a ``[permissions]`` group of them, or a ``[dispatcher]`` set (``freeswitch_set``, 1;
see ``routes/_common.py``). The seed's block, with ``$si == FreeSWITCH`` as
``check_source_address(1) || ds_is_in_list($si, 0, 1)``::

    if ($si == FreeSWITCH) {
        lookup("location", "m");
        switch ($retcode) { case 1: t_relay(); case -1: sl_send_reply(404, "Not Found");
                            case -2: sl_send_reply(405, "Not Allowed");
                            case -3: sl_send_reply(500, "Server Internal Error"); }
    }

-3 (the lookup itself failed) is 500, not the seed's 404: "not here" must mean the user is not here.
The bridge still moves on to the next node on a 500.
"""

from edgeproxy.routing import LookupResult

from edgeproxy_routes._common import common_prelude, from_freeswitch, relay_or_error, to_freeswitch


async def request_route(msg):
    if await common_prelude(msg):
        return
    if from_freeswitch(msg):
        match await msg.lookup("location", "m"):
            case LookupResult.FOUND:
                msg.xlog("LOCAL CONTACT FOUND")
                relay_or_error(msg)
            case LookupResult.NOT_FOUND:
                msg.sl_send_reply(404, "Not Found")
            case LookupResult.METHOD_NOT_ALLOWED:
                msg.sl_send_reply(405, "Not Allowed")
            case LookupResult.ERROR:
                msg.sl_send_reply(500, "Server Internal Error")
        return
    await to_freeswitch(msg)
