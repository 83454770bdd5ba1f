from django.db import models


class Category(models.Model):
    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=100)

    def __str__(self):
        return self.slug


class Product(models.Model):
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products")
    sku = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=200)
    price_cents = models.PositiveIntegerField()

    class Meta:
        indexes = [models.Index(fields=["category", "price_cents"], name="shop_product_cat_price")]

    def __str__(self):
        return self.sku


class Order(models.Model):
    customer = models.ForeignKey("accounts.Customer", on_delete=models.CASCADE, related_name="orders")
    created = models.DateTimeField(auto_now_add=True)
    paid = models.BooleanField(default=False)

    def total_cents(self):
        return sum(line.quantity * line.unit_price_cents for line in self.lines.all())


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT)
    quantity = models.PositiveIntegerField(default=1)
    unit_price_cents = models.PositiveIntegerField()
