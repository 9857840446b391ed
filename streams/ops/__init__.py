"""Running the service: logging (and, later, health, metrics and the web endpoints)."""
