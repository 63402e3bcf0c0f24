"""edgeproxy: a scriptable SIP edge proxy on Twisted."""

__version__ = "0.1.0"
