"""The HTTP listener (``[http]``); static/ holds the built-in web chat page."""
