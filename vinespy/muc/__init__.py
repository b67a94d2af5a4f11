"""XEP-0045 Multi-User Chat: the room engine (:mod:`.room`), free of I/O."""
