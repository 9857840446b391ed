"""Pure rules of the communication service: no I/O, no clock, no frameworks.

Every rule that depends on time takes ``now`` (a time-zone-aware datetime) as a
parameter; the edge (``streams``) reads the clock once and passes it in.
"""
