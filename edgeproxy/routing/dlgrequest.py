"""``msg``'s dialog functions and pseudo-variables (OpenSIPS ``dialog``): ``create_dialog``,
``match_dialog``, ``validate_dialog``, ``$DLG_status``, ``$DLG_did``, ``$DLG_timeout`` and the
profiles -- :class:`DialogRequest`, a part of :class:`~edgeproxy.routing.api.RouteRequest`, over the
verbs of :class:`~edgeproxy.routing.verbs.RouteVerbs` (the dialog table is :mod:`edgeproxy.dialog`'s).
"""

from __future__ import annotations

from .part import RequestPart

__all__ = ["DialogRequest"]


class DialogRequest(RequestPart):
    """``msg``'s dialog functions (a part of :class:`~edgeproxy.routing.api.RouteRequest`)."""

    __slots__ = ()

    def create_dialog(self, flags: str = "") -> bool:
        """OpenSIPS ``create_dialog(flags)`` on an initial INVITE: the node keeps the call until it
        ends (states, lifetime, profiles); flag ``B`` ends it with a BYE to both sides when its
        lifetime (``[dialog] default_timeout``, or ``msg.dlg_timeout``) runs out; ``P`` / ``p`` ping
        the caller / callee with an in-dialog OPTIONS every ``options_ping_interval`` and end the call
        with BYEs when one answers 408/481 or not at all. True when the dialog exists (made now or
        already), False when it cannot be (no From tag, not an INVITE)."""
        return self._verbs.create_dialog(self._state, flags)

    def match_dialog(self) -> bool:
        """OpenSIPS ``match_dialog()``: whether this request belongs to one of our dialogs (Call-ID
        and both tags; ``loose_route()`` matches too)."""
        return self._verbs.dialog(self._state) is not None

    def validate_dialog(self) -> int:
        """OpenSIPS ``validate_dialog()``: 1 valid; -1 bad CSeq; -2 the Request-URI is not the
        party's Contact; -4 no dialog."""
        return self._verbs.validate_dialog(self._state)

    @property
    def dlg_status(self) -> int | None:
        """``$DLG_status``: 1 unconfirmed, 2 early, 3 confirmed (no ACK yet), 4 confirmed, 5 ended;
        None without a dialog."""
        dlg = self._verbs.dialog(self._state)
        return None if dlg is None else int(dlg.state)

    @property
    def dlg_did(self) -> str | None:
        """``$DLG_did``: the dialog id the MI's ``dlg_list``/``dlg_end_dlg`` use."""
        dlg = self._verbs.dialog(self._state)
        return None if dlg is None else dlg.did

    @property
    def dlg_timeout(self) -> int | None:
        """``$DLG_timeout``: seconds left of a confirmed dialog, else the lifetime it will get."""
        return self._verbs.dlg_timeout(self._state)

    @dlg_timeout.setter
    def dlg_timeout(self, seconds: int) -> None:
        self._verbs.set_dlg_timeout(self._state, seconds)

    def set_dlg_profile(self, profile: str, value: str | None = None) -> bool:
        """OpenSIPS ``set_dlg_profile(profile, value)``: count the dialog in the profile until it
        ends (``[dialog] profiles_with_value`` / ``profiles_no_value`` declare them)."""
        return self._verbs.set_dlg_profile(self._state, profile, value)

    def unset_dlg_profile(self, profile: str, value: str | None = None) -> bool:
        return self._verbs.unset_dlg_profile(self._state, profile, value)

    def is_in_profile(self, profile: str, value: str | None = None) -> bool:
        return self._verbs.is_in_profile(self._state, profile, value)

    def get_profile_size(self, profile: str, value: str | None = None) -> int:
        """OpenSIPS ``get_profile_size(profile, value, $var)``: dialogs in the profile now (a valued
        profile without value: all of them)."""
        return self._verbs.get_profile_size(profile, value)
