import os

from alembic.script import ScriptDirectory

from app import Author, Post, Tag, db


def test_database_is_at_head(app):
    migrations = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")
    config = app.extensions["migrate"].migrate.get_config(migrations)
    head = ScriptDirectory.from_config(config).get_current_head()
    current = db.session.execute(db.text("SELECT version_num FROM alembic_version")).scalar_one()
    assert current == head == "0003"


def test_published_at_is_indexed(app):
    names = {ix["name"] for ix in db.inspect(db.engine).get_indexes("post")}
    assert "ix_post_published_at" in names


def test_posts_with_tags(app, client):
    ada = Author(name="Ada")
    post = Post(author=ada, title="Engines", body="...", tags=[Tag(name="history"), Tag(name="math")])
    db.session.add(post)
    db.session.commit()
    assert sorted(t.name for t in db.session.get(Post, post.id).tags) == ["history", "math"]
    response = client.get(f"/authors/{ada.id}/posts")
    assert response.status_code == 200
    assert response.get_json() == ["Engines"]


def test_unknown_author_is_404(client):
    assert client.get("/authors/999999/posts").status_code == 404
