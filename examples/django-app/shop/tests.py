from django.db import connection
from django.test import TestCase

from accounts.models import Customer
from shop.models import Category, Order, OrderLine, Product


class MigrationStateTests(TestCase):
    def test_data_migration_seeded_categories(self):
        self.assertEqual(
            sorted(Category.objects.values_list("slug", flat=True)),
            ["books", "games", "tools"],
        )

    def test_product_index_exists(self):
        with connection.cursor() as cur:
            cur.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexname = %s",
                ["shop_product", "shop_product_cat_price"],
            )
            row = cur.fetchone()
        self.assertIsNotNone(row)
        self.assertIn("(category_id, price_cents)", row[0])


class OrderTests(TestCase):
    def test_order_total(self):
        books = Category.objects.get(slug="books")
        novel = Product.objects.create(category=books, sku="BK-1", name="Novel", price_cents=1250)
        atlas = Product.objects.create(category=books, sku="BK-2", name="Atlas", price_cents=4000)
        order = Order.objects.create(customer=Customer.objects.create(email="a@example.com", name="A"))
        OrderLine.objects.create(order=order, product=novel, quantity=2, unit_price_cents=novel.price_cents)
        OrderLine.objects.create(order=order, product=atlas, quantity=1, unit_price_cents=atlas.price_cents)
        self.assertEqual(order.total_cents(), 2 * 1250 + 4000)
        self.assertEqual(books.products.count(), 2)
