"""Pure functions from validated specs to Kubernetes object dicts (no API calls)."""
