"""Route modules shipped with edgeproxy: default (registrar + proxy) and the seed variants."""
