"""The index: models, sessions, query matching, migrations."""
