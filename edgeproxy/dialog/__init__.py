"""Dialogs (OpenSIPS's ``dialog`` module): the calls going through the node, their states, lifetimes
and profiles, and the BYEs that end them from the edge. Sans-IO: the proxy layer
(:mod:`edgeproxy.proxy.dialogs`) feeds it what it sees and sends what it returns."""

from .model import (
    FLAG_BYE_ON_TIMEOUT,
    FLAG_PING_CALLEE,
    FLAG_PING_CALLER,
    Dialog,
    DialogListener,
    DialogState,
    parse_flags,
)
from .profiles import ProfileError, Profiles
from .requests import to_callee, to_caller
from .settings import DialogSettings
from .table import DialogError, DialogTable, Outgoing

__all__ = ["Dialog", "DialogListener", "DialogState", "DialogTable", "DialogError", "DialogSettings",
           "ProfileError", "Profiles", "Outgoing", "FLAG_BYE_ON_TIMEOUT", "FLAG_PING_CALLER",
           "FLAG_PING_CALLEE", "parse_flags", "to_callee", "to_caller"]
