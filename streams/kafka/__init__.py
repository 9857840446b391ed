"""Kafka plumbing: the Faust app, topics and table declared from settings, topic
creation, publishing that waits out broker trouble, and dead letters."""
