#!/usr/bin/env python3
"""Generate a small Django project with a data-heavy fixture for benchmarks (bench/curve.py's djfix-*).

One app, `shop`, with two models: Customer (name, unique email, indexed country, a timestamp, an
int, a JSON profile) and Order (a foreign key to Customer, an indexed timestamp, a status, ints, a
JSON list of order lines, a free-text note of log-normal length, median ~400 characters, up to 8 KiB).
The fixture is fixtures/shop.jsonl.gz (JSON Lines, which Django's loaddata reads one object at a time
instead of parsing the whole file first; gzip as a large fixture kept in a repository would be).

The rows are not repeated: a seeded PRNG draws every value, the text from a Zipf-like vocabulary of
made-up words, so the data is the same on every run (the same fixture, the same key) and compresses
like real data rather than like pgbench's runs of identical rows.

usage: gen_fixture.py OUT_DIR ORDERS [--seed N]
  Customers: ORDERS / 8.  ORDERS = 45000 (djfix-100m): a 16 MiB fixture, a PGDATA of about 105 MiB.
Settings as gen_django.py's (PGHOST / PGPORT / PGUSER / PGPASSWORD / PGDATABASE).
"""
import datetime
import gzip
import itertools
import json
import os
import random
import sys

from gen_django import write_skeleton

MODELS = '''from django.db import models


class Customer(models.Model):
    name = models.CharField(max_length=120)
    email = models.CharField(max_length=200, unique=True)
    country = models.CharField(max_length=2, db_index=True)
    joined = models.DateTimeField()
    credit = models.IntegerField()
    profile = models.JSONField(default=dict)


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE)
    placed = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=12)
    quantity = models.IntegerField()
    total_cents = models.BigIntegerField()
    lines = models.JSONField(default=list)
    note = models.TextField(blank=True)
'''

MIGRATION = '''from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(name='Customer', fields=[
            ('id', models.AutoField(primary_key=True, serialize=False)),
            ('name', models.CharField(max_length=120)),
            ('email', models.CharField(max_length=200, unique=True)),
            ('country', models.CharField(max_length=2, db_index=True)),
            ('joined', models.DateTimeField()),
            ('credit', models.IntegerField()),
            ('profile', models.JSONField(default=dict)),
        ]),
        migrations.CreateModel(name='Order', fields=[
            ('id', models.AutoField(primary_key=True, serialize=False)),
            ('customer', models.ForeignKey(on_delete=models.CASCADE, to='shop.customer')),
            ('placed', models.DateTimeField(db_index=True)),
            ('status', models.CharField(max_length=12)),
            ('quantity', models.IntegerField()),
            ('total_cents', models.BigIntegerField()),
            ('lines', models.JSONField(default=list)),
            ('note', models.TextField(blank=True)),
        ]),
    ]
'''

COUNTRIES = ["DE", "FR", "US", "GB", "NL", "SE", "PL", "IT", "ES", "JP", "BR", "IN", "CA", "AT", "CH", "NO"]
STATUSES = ["new", "paid", "packed", "shipped", "delivered", "returned", "cancelled"]
EPOCH = datetime.datetime(2019, 1, 1, tzinfo=datetime.timezone.utc)
SPAN_S = 6 * 365 * 86400


class Words:
    """A vocabulary of made-up words drawn with Zipf-like weights, as words in real text are."""

    def __init__(self, rng, n=6000):
        syl = ["ka", "lo", "mi", "ter", "an", "sol", "ve", "ri", "pon", "du", "el", "is", "mar", "gu", "ten",
               "ba", "or", "qui", "ne", "st", "ch", "al", "zu", "fe", "hy", "op", "wan", "ry", "co", "ex"]
        seen = set()
        while len(seen) < n:
            seen.add("".join(rng.choice(syl) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))))
        self.vocab = sorted(seen)
        rng.shuffle(self.vocab)
        self.cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(n)))
        self.rng = rng

    def text(self, n):
        out = self.rng.choices(self.vocab, cum_weights=self.cum, k=n)
        return " ".join(out)

    def name(self):
        return " ".join(w.capitalize() for w in self.rng.choices(self.vocab, cum_weights=self.cum, k=2))


def stamp(rng):
    t = EPOCH + datetime.timedelta(seconds=rng.randrange(SPAN_S), microseconds=rng.randrange(1000000))
    return t.isoformat().replace("+00:00", "Z")


def customer(rng, words, pk):
    name = words.name()
    profile = {"newsletter": rng.random() < 0.3, "tags": words.text(rng.randrange(4)).split(),
               "address": {"street": f"{words.name()} {rng.randrange(1, 300)}", "city": words.name(),
                           "zip": f"{rng.randrange(10000, 99999)}"},
               "phone": f"+{rng.randrange(1, 99)} {rng.randrange(10**8, 10**10)}"}
    return {"model": "shop.customer", "pk": pk, "fields": {
        "name": name, "email": f"{name.replace(' ', '.').lower()}.{pk}@example.{rng.choice(COUNTRIES).lower()}",
        "country": rng.choice(COUNTRIES), "joined": stamp(rng), "credit": rng.randrange(-5000, 100000),
        "profile": profile}}


def order(rng, words, pk, customers):
    lines = [{"sku": f"SKU-{rng.randrange(100000):05d}", "qty": rng.randrange(1, 9),
              "price_cents": rng.randrange(99, 99999), "name": words.text(rng.randrange(2, 5))}
             for _ in range(rng.randrange(1, 7))]
    note_words = min(int(rng.lognormvariate(4.2, 1.0)), 1200)  # median ~67 words, ~400 characters
    return {"model": "shop.order", "pk": pk, "fields": {
        "customer": rng.randrange(1, customers + 1), "placed": stamp(rng), "status": rng.choice(STATUSES),
        "quantity": sum(x["qty"] for x in lines), "total_cents": sum(x["qty"] * x["price_cents"] for x in lines),
        "lines": lines, "note": words.text(note_words)[:8192]}}


def write_fixture(path, orders, seed):
    rng = random.Random(seed)
    words = Words(rng)
    customers = max(orders // 8, 1)
    # mtime=0: the same bytes (the same key) on every run
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as f:
        for pk in range(1, customers + 1):
            f.write((json.dumps(customer(rng, words, pk), separators=(",", ":")) + "\n").encode())
        for pk in range(1, orders + 1):
            f.write((json.dumps(order(rng, words, pk, customers), separators=(",", ":")) + "\n").encode())
    return customers


def main():
    argv = sys.argv[1:]
    seed = 19
    if len(argv) == 4 and argv[2] == "--seed":
        seed, argv = int(argv[3]), argv[:2]
    if len(argv) != 2:
        sys.exit(__doc__)
    root, orders = argv[0], int(argv[1])
    write_skeleton(root, ["shop"])
    for d in ("shop/migrations", "fixtures"):
        os.makedirs(f"{root}/{d}", exist_ok=True)
    for p in ("shop/__init__.py", "shop/migrations/__init__.py"):
        open(f"{root}/{p}", "w").close()
    with open(f"{root}/shop/models.py", "w") as f:
        f.write(MODELS)
    with open(f"{root}/shop/migrations/0001_initial.py", "w") as f:
        f.write(MIGRATION)
    customers = write_fixture(f"{root}/fixtures/shop.jsonl.gz", orders, seed)
    print(f"{customers} customers, {orders} orders")


if __name__ == "__main__":
    main()
