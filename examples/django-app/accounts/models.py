from django.db import models


class Customer(models.Model):
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=200)
    joined = models.DateTimeField(auto_now_add=True)
    phone = models.CharField(max_length=32, blank=True, default="")

    def __str__(self):
        return self.email
