from django.db import IntegrityError, transaction
from django.test import TestCase

from accounts.models import Customer


class CustomerTests(TestCase):
    def test_email_is_unique(self):
        Customer.objects.create(email="x@example.com", name="X")
        with self.assertRaises(IntegrityError), transaction.atomic():
            Customer.objects.create(email="x@example.com", name="Other X")

    def test_phone_defaults_to_empty(self):
        self.assertEqual(Customer.objects.create(email="y@example.com", name="Y").phone, "")
