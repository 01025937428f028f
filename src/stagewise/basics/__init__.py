"""The bottom layer: small helpers for the impure parts of stagewise (processes, files, waiting, ports).

    proc      what /proc says of a process: state, start time, command line, environment,
              children, descriptors, and who listens on which TCP socket
    files     atomic file writes, the tail and the last line of a log
    waiting   polling until a deadline, async and blocking, never busy
    ports     free loopback ports, and host:port split

Every driver and every upper layer may import this package; it imports nothing
of stagewise but `stagewise.errors` (import-linter holds both). The pure layers
(core, spec, strategies, judges, engine, convert) never need it: they read no
clock and touch no process or file. Each helper is small and does one thing,
so that the drivers stop writing their own copy of it.
"""
