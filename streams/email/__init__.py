"""What therapists read: template rendering (Jinja2, autoescaped), the template
context, staff HTML sanitising, the plain-text part, and previews."""
