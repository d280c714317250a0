from django.urls import path

from tenants import views, views_notifications

urlpatterns = [
    path("", views.home, name="home"),
    path("t/<uuid:tenant_code>/audit/", views.audit_log, name="audit_log"),
    path("t/<uuid:tenant_code>/notifications/", views_notifications.notification_list, name="notifications"),
    path(
        "t/<uuid:tenant_code>/notifications/read-all/",
        views_notifications.notification_read_all,
        name="notifications_read_all",
    ),
    path("t/<uuid:tenant_code>/notifications/bell/", views_notifications.notification_bell, name="notification_bell"),
    path("notifications/<uuid:code>/", views_notifications.notification_detail, name="notification_detail"),
    path("notifications/<uuid:code>/read/", views_notifications.notification_read, name="notification_read"),
]
