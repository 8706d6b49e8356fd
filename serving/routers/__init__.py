"""One router per resource: ``online`` (lookups), ``push``, ``registry`` (read-only), ``admin``."""
