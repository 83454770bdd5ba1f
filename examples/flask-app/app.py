"""A small Flask + Flask-SQLAlchemy + Flask-Migrate app for the pgstash example.

The database URL comes from DATABASE_URL, which pgstash sets for every
migration step (postgresql://USER@/DB?host=SOCKET_DIR&port=PORT); the schema is
built by `flask --app app db upgrade` from migrations/.
"""
import importlib.util
import os

from flask import Flask, jsonify
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()
migrate = Migrate()


def database_url():
    url = os.environ.get("DATABASE_URL", "postgresql:///flask_app")
    # Heroku-style URLs say postgres://, which SQLAlchemy 1.4+ no longer accepts.
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    # A bare postgresql:// means psycopg2 up to SQLAlchemy 2.0 and psycopg 3
    # from 2.1 on: name the driver that is installed (Debian has psycopg2).
    if url.startswith("postgresql://"):
        driver = "psycopg2" if importlib.util.find_spec("psycopg2") else "psycopg"
        url = f"postgresql+{driver}://" + url[len("postgresql://"):]
    return url


class Author(db.Model):
    __tablename__ = "author"
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(120), nullable=False, unique=True)
    posts = db.relationship("Post", back_populates="author")


post_tag = db.Table(
    "post_tag",
    db.Column("post_id", db.Integer, db.ForeignKey("post.id", ondelete="CASCADE"), primary_key=True),
    db.Column("tag_id", db.Integer, db.ForeignKey("tag.id", ondelete="CASCADE"), primary_key=True),
)


class Tag(db.Model):
    __tablename__ = "tag"
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(50), nullable=False, unique=True)


class Post(db.Model):
    __tablename__ = "post"
    id = db.Column(db.Integer, primary_key=True)
    author_id = db.Column(db.Integer, db.ForeignKey("author.id"), nullable=False)
    title = db.Column(db.String(200), nullable=False)
    body = db.Column(db.Text, nullable=False, default="")
    published_at = db.Column(db.DateTime(timezone=True), nullable=True, index=True)
    author = db.relationship("Author", back_populates="posts")
    tags = db.relationship("Tag", secondary=post_tag, backref="posts")


def create_app(url=None):
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = url or database_url()
    app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False
    db.init_app(app)
    migrate.init_app(app, db)

    @app.get("/authors/<int:author_id>/posts")
    def author_posts(author_id):
        author = db.get_or_404(Author, author_id)
        return jsonify([p.title for p in author.posts])

    return app


app = create_app()
