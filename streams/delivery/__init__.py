"""Delivery: from stored emails to SMTP, and from the outbox to Kafka.

- ``loop``: claims due emails, sends them, records the results (``process``: the
  same loop in a child process; ``store``: its port to the database); ``mailer``:
  the SMTP port and its adapter;
  ``mime``: the message as sent; ``addresses``: IDNA and SMTPUTF8;
- ``relay``: publishes the outbox in order; ``scheduled``: follow-ups, reminders and
  the daily call list; ``wakeups``: in-process nudges between them.
"""
