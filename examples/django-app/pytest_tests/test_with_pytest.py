"""The same checks through pytest-django, for `pytest -n N --reuse-db`:
each xdist worker uses test_<db>_gw<i>, which pgstash's [clones] naming =
xdist creates already migrated."""
import pytest
from django.db import connection

from shop.models import Category, Product


@pytest.mark.django_db
def test_seeded_categories():
    assert sorted(Category.objects.values_list("slug", flat=True)) == ["books", "games", "tools"]


@pytest.mark.django_db
def test_database_is_a_worker_clone():
    name = connection.settings_dict["NAME"]
    assert name.startswith("test_"), name


@pytest.mark.django_db
def test_create_product():
    books = Category.objects.get(slug="books")
    Product.objects.create(category=books, sku="PY-1", name="Pytest", price_cents=100)
    assert Product.objects.filter(sku="PY-1").count() == 1
