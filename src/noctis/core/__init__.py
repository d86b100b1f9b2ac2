"""The domain core: what every Noctis process shares (runtime context, ingest, accounts,
facility registry, audit, notices, task queue). It never imports a process package."""
