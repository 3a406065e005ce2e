from django.contrib import admin

from .models import Document


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ('title', 'attachment', 'size')
    search_fields = ('title', 'notes')

    @admin.display(description='size (bytes)')
    def size(self, obj):
        try:
            return obj.attachment.size
        except OSError:
            return None
