"""XML streams (RFC 6120): client-to-server negotiation, TLS and SASL."""
