"""Pure rendering: config and inputs in, Kubernetes objects (plain dicts) out. No I/O here."""
