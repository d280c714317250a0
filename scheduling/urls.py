from django.urls import path

from scheduling.views import audit, bulk_actions, health, notifications, runs, schedules, sets, settings

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("t/<uuid:tenant_code>/schedules/", schedules.schedule_list, name="schedules"),
    path("t/<uuid:tenant_code>/schedules/new/", schedules.schedule_create, name="schedule_create"),
    path("t/<uuid:tenant_code>/schedules/bulk/", bulk_actions.schedule_bulk, name="schedule_bulk"),
    path("t/<uuid:tenant_code>/schedules/preview/", schedules.schedule_preview, name="schedule_preview"),
    path("t/<uuid:tenant_code>/schedules/fields/", schedules.schedule_form_fields, name="schedule_form_fields"),
    path("t/<uuid:tenant_code>/settings/", settings.tenant_settings, name="tenant_settings"),
    path("t/<uuid:tenant_code>/runs/", runs.run_list, name="runs"),
    path("schedules/<uuid:code>/", schedules.schedule_detail, name="schedule_detail"),
    path("schedules/<uuid:code>/edit/", schedules.schedule_edit, name="schedule_edit"),
    path("schedules/<uuid:code>/delete/", schedules.schedule_delete, name="schedule_delete"),
    path("schedules/<uuid:code>/toggle/", schedules.schedule_toggle, name="schedule_toggle"),
    path("schedules/<uuid:code>/run/", schedules.schedule_run_now, name="schedule_run_now"),
    path("schedules/<uuid:code>/settings/", settings.schedule_settings_save, name="schedule_settings_save"),
    path("schedules/<uuid:code>/settings/fields/", settings.schedule_settings_fields, name="schedule_settings_fields"),
    path("runs/<uuid:code>/", runs.run_detail, name="run_detail"),
    path("runs/<uuid:code>/retry/", runs.run_retry, name="run_retry"),
    path("sets/<uuid:code>/pin/", sets.set_pin, name="set_pin"),
    path("sets/<uuid:code>/unpin/", sets.set_unpin, name="set_unpin"),
    path("sets/<uuid:code>/delete/", sets.set_delete, name="set_delete"),
    path("sets/<uuid:code>/verify/", sets.set_verify, name="set_verify"),
    path("sets/<uuid:code>/restore/", sets.set_restore, name="set_restore"),
    path("sets/<uuid:code>/restore/<uuid:item_code>/", sets.set_restore, name="set_restore_item"),
    path("t/<uuid:tenant_code>/audit/", audit.audit_log, name="audit_log"),
    path("t/<uuid:tenant_code>/notifications/", notifications.notification_list, name="notifications"),
    path(
        "t/<uuid:tenant_code>/notifications/read-all/",
        notifications.notification_read_all,
        name="notifications_read_all",
    ),
    path("t/<uuid:tenant_code>/notifications/bell/", notifications.notification_bell, name="notification_bell"),
    path("notifications/<uuid:code>/", notifications.notification_detail, name="notification_detail"),
    path("notifications/<uuid:code>/read/", notifications.notification_read, name="notification_read"),
]
