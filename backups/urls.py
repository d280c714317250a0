from django.urls import path

from backups import views

urlpatterns = [
    path("t/<uuid:tenant_code>/sources/", views.source_list, name="sources"),
    path("t/<uuid:tenant_code>/sources/new/", views.source_create, name="source_create"),
    path("sources/<uuid:code>/edit/", views.source_edit, name="source_edit"),
    path("sources/<uuid:code>/delete/", views.source_delete, name="source_delete"),
    path("sources/<uuid:code>/test/", views.source_test, name="source_test"),
    path("source-checks/<uuid:code>/", views.source_check, name="source_check"),
]
