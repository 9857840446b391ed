"""The read-only HTTP API on the worker's web server (``/api/…``): emails, phone
calls and the live picture of one therapist's communication, for staff tools.
Writes stay commands on ``communication-commands``.

- ``pages``: the routes and what each answers (``serve_api`` registers them);
- ``auth``: bearer tokens, compared in constant time;
- ``params``: query parameters and cursors, a 400 naming the parameter;
- ``documents``: the JSON form of what is read;
- ``therapist_view``: one therapist's picture, from the table and the database;
- ``routing``: which worker holds a therapist's state, and forwarding to it.
"""
