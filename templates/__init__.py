"""Email templates (Jinja2, German). A package only so that they install with the code."""
