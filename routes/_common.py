"""What every shipped route does before its own logic: OpenSIPS's stock sanity and in-dialog blocks,
and the registrar. Kept in one place so the three seed variants differ only where the seed does."""

from __future__ import annotations


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
    if msg.is_method("OPTIONS") and msg.ruri_user is None and msg.is_myself():
        msg.sl_send_reply(200, "OK")  # keep-alive pings (e.g. FreeSWITCH gateways) to the node itself
        return True
    if msg.is_method("REGISTER"):
        if not msg.is_myself():
            msg.sl_send_reply(403, "Forbidden")
        else:
            await msg.save("location")
        return True
    if msg.is_method("INVITE"):
        msg.record_route()
    return False


def relay_or_error(msg) -> None:
    """``if (!t_relay()) { xlog(...); sl_reply_error(); }``"""
    if not msg.t_relay():
        msg.log("UNABLE TO RELAY TO CONTACT")
        msg.sl_reply_error()
    else:
        msg.log("RELAY TO CONTACT SUCCESSFUL", "debug")


def to_freeswitch(msg) -> None:
    """Calls from endpoints go to the media servers (the seed's '...'): the first FreeSWITCH in
    ``route_params.freeswitch``, or 404 when none is configured."""
    freeswitch = msg.params.get("freeswitch", [])
    if not freeswitch:
        msg.sl_send_reply(404, "Not Found")
        return
    msg.set_dst(f"sip:{freeswitch[0]}")
    relay_or_error(msg)
