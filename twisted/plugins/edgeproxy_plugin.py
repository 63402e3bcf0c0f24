"""Registers ``twistd edgeproxy`` (see :mod:`edgeproxy.tap`)."""

from twisted.application.service import ServiceMaker

edgeproxy = ServiceMaker("edgeproxy", "edgeproxy.tap", "SIP edge proxy", "edgeproxy")
