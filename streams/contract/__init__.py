"""The published contract, generated from the wire models: an AsyncAPI 3.0 document of
the five public topics, a JSON Schema per message, and the check that a change keeps
the contract compatible (``commsvc schema``; ``docs/asyncapi.yaml`` is its output)."""
