"""The edges of the communication service: Faust app and agents, schemas, settings,
persistence, SMTP, rendering, CLI. The one place that wires it all together is
``streams.bootstrap``."""
