from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

import noctis.index.accounts  # (its tables are part of the metadata)
import noctis.index.notify  # (notifications after the outbox: part of the metadata too)
import noctis.index.orders  # (orders and MPPS: part of the metadata too)
import noctis.index.reports  # (reports, versions, templates, attachments: part of the metadata)
import noctis.index.results  # (results of automated analysis: part of the metadata too)
import noctis.index.routing  # (routes and transfers: part of the metadata too)
import noctis.index.stable  # (study_stable: part of the metadata too)
import noctis.index.workflow  # (the reading workflow: part of the metadata too)
import noctis.index.worklist  # noqa: F401  (notes and the worklist's indexes)
from noctis.index.models import Base

config = context.config


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
