"""``commsvc demo``: the embedded broker (Tansu), an SMTP capture, a scenario that
plays the service's rules in about 35 seconds, and its verdicts."""
