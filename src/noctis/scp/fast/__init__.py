"""The fast DIMSE path: pynetdicom's acceptor made event-driven, C-STORE taken straight off the
socket, command sets written directly; every touch of pynetdicom's internals is in `compat`."""
