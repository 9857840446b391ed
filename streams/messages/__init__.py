"""Messages on the wire: the public schemas (envelope, inputs, commands) and their
parser, the typed internal messages between the agents, and the table codec."""
