"""The HTTP listener (``[http]``): WebSocket (RFC 7395, :mod:`.websocket`),
BOSH (XEP-0124/0206, :mod:`.bosh`), XEP-0156 discovery and the web page
(:mod:`.app`). Imported only when the ``[http]`` table is configured."""
