"""The Faust agents: thin consumers that decode a message, ask the domain, and
publish or store what it decided.

- ``ingest``: input topics -> validated, repartitioned by therapist into the inbox;
- ``therapist``: the inbox -> the therapist table and send commands (the only writer
  of the table); ``ticks``: the per-partition batch-run ticks it acts on;
- ``sender``: send commands -> stored emails, directory mirror, calls;
- ``commands``: ``communication-commands`` -> the database, or the therapist agent.
"""
