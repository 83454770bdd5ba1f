"""Fixtures for the example app's tests.

They run against an already migrated database: TEST_DATABASE_URL, else
DATABASE_URL (as pgstash gives it), else the local flask_app database.  Each
test's rows are removed afterwards, so the schema pgstash cached stays as the
migrations left it.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app import create_app, database_url, db  # noqa: E402


@pytest.fixture()
def app():
    flask_app = create_app(os.environ.get("TEST_DATABASE_URL") or database_url())
    flask_app.config["TESTING"] = True
    with flask_app.app_context():
        yield flask_app
        db.session.rollback()
        db.session.execute(db.text("TRUNCATE post_tag, post, tag, author RESTART IDENTITY CASCADE"))
        db.session.commit()
        db.session.remove()


@pytest.fixture()
def client(app):
    return app.test_client()
