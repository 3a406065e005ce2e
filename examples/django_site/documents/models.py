from django.db import models


class Document(models.Model):
    title = models.CharField(max_length=200)
    attachment = models.FileField(upload_to='documents/')
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ['title']

    def __str__(self):
        return self.title
